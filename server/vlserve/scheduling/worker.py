"""One thread per model owns its device: it forms batches for the encoder graphs and
steps the decoders' continuous batches (scheduling/decoding.py). When both have work, each gets
about half the device time: after an encoder batch the decoders step for as long (_decode_share).

Event-loop side: `submit` / `submit_generate` enqueue an Item and return at once (or raise
QueueFullError); the caller awaits `item.future`. Cancelling that future (a client that
went away) removes the work: queued items are skipped, running decode groups dropped.
An item whose deadline passed while queued is answered with DeadlineExceededError.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from ..engine.family import DecoderGraph, FamilyEngine
from ..errors import ModelFailedError, QueueFullError
from ..settings import Settings
from .decoding import Decoders
from .items import Item
from .ops import Op, ops_for

log = logging.getLogger("vlserve.scheduling")


def _default(name: str):
    return Settings.model_fields[name].default  # the settings are the one source of these defaults


@dataclass(frozen=True)
class Limits:
    max_batch_size: int = _default("max_batch_size")
    max_queue_delay_ms: float = _default("max_queue_delay_ms")
    max_queue_size: int = _default("max_queue_size")
    max_decode_rows: int = _default("max_decode_rows")


class NullMetrics:
    def queued(self, graph, seconds): ...
    def computed(self, graph, seconds, batch_size): ...
    def depth(self, graph, n): ...
    def generated(self, tokens): ...


class GraphQueue:
    def __init__(self, op: Op, limits: Limits):
        self.op, self.limits = op, limits
        self.items: deque[Item] = deque()
        self.queued = 0  # examples

    def put(self, item: Item) -> None:
        if self.queued + item.size > self.limits.max_queue_size and self.items:
            raise QueueFullError(f"the {self.op.name} queue is full ({self.queued} examples waiting)")
        self.items.append(item)
        self.queued += item.size

    def due_in(self, now: float) -> float | None:
        """Seconds until a batch should run (0: now), None when empty."""
        if not self.items:
            return None
        if self.queued >= self.limits.max_batch_size:
            return 0.0
        return max(0.0, self.items[0].enqueued + self.limits.max_queue_delay_ms / 1000 - now)

    def take_all(self) -> list[Item]:
        items, self.items, self.queued = list(self.items), deque(), 0
        return items

    def take(self) -> list[Item]:
        batch, size = [], 0
        while self.items and (not batch or size + self.items[0].size <= self.limits.max_batch_size):
            item = self.items.popleft()
            self.queued -= item.size
            batch.append(item)
            size += item.size
        return batch


class DeviceWorker:
    def __init__(self, engine: FamilyEngine, limits: Limits = Limits(), metrics=None, name: str = "model",
                 on_death=None):
        self.engine, self.limits, self.name = engine, limits, name
        self.on_death = on_death  # called with the error if the thread dies
        self.dead: ModelFailedError | None = None
        self.current: list[Item] = []  # the encoder batch being run
        self.metrics = metrics or NullMetrics()
        self.queues = {name: GraphQueue(op, limits) for name, op in ops_for(engine).items()}
        self.decoders = Decoders(engine, limits.max_decode_rows, limits.max_queue_size, self.metrics, name)
        self.cond = threading.Condition()
        self.stopping = False
        self.decode_credit = 0.0  # seconds of device time the decoders may take next (_decode_share)
        self.thread = threading.Thread(target=self._run, name=f"vlserve-worker-{name}", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> "DeviceWorker":
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(timeout)

    @property
    def pending(self) -> int:
        """Items queued or running (for draining and tests)."""
        with self.cond:
            return sum(len(q.items) for q in self.queues.values()) + len(self.decoders.inbox) + \
                len(self.decoders.running)

    # -- event-loop side ----------------------------------------------------------------------

    def submit(self, op: str, inputs, size: int, deadline: float) -> Item:
        item = Item(inputs, size, asyncio.get_running_loop().create_future(), asyncio.get_running_loop(), deadline)
        with self.cond:
            if self.dead is not None:
                raise self.dead
            queue = self.queues.get(op)
            if queue is None:
                raise ValueError(f"model '{self.name}' has no '{op}' operation")
            queue.put(item)
            self.metrics.depth(op, queue.queued)
            self.cond.notify()
        return item

    def submit_generate(self, groups: list, deadline: float, graph: DecoderGraph) -> Item:
        loop = asyncio.get_running_loop()
        item = Item(groups, sum(g.max_rows for g in groups), loop.create_future(), loop, deadline)
        with self.cond:
            if self.dead is not None:
                raise self.dead
            self.decoders.put(item, graph)
            self.cond.notify()
        return item

    # -- worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self.stopping:
                try:
                    self._serve_once()
                except Exception:  # a bookkeeping bug must not silently kill the model's only thread
                    log.exception("%s: worker iteration failed", self.name)
                    time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - the thread dies: answer everyone, then say so
            self._died(exc)

    def _died(self, exc: BaseException) -> None:
        """Every queued and running request gets one error; the model stays failed (its
        device state is unknown): restart the server to serve it again."""
        log.critical("%s: worker thread died: %r", self.name, exc, exc_info=exc)
        error = ModelFailedError(f"model '{self.name}' stopped: its worker thread died ({type(exc).__name__})",
                                 param="model")
        if self.on_death is not None:  # first: a client answered next must see the model failed
            self.on_death(error)
        with self.cond:
            self.dead = error
            items = list(self.current) + self.decoders.take_all()
            for queue in self.queues.values():
                items += queue.take_all()
        for item in items:
            item.fail(error)

    def _serve_once(self) -> None:
        with self.cond:
            queue = self._wait_for_work()
            batch = queue.take() if queue else []
            if queue:
                self.metrics.depth(queue.op.name, queue.queued)
        if batch:
            start = time.monotonic()
            self.current = batch
            self._run_batch(queue.op, batch)
            self.current = []
            self.decode_credit += time.monotonic() - start
        self._decode_share()

    def _decode_share(self) -> None:
        """Decode steps (at least one when busy) until the decoders have had as much device
        time as the encoder batch before them. Under mixed load each side gets half the
        device: one step per encoder batch let a stream of vision work stretch every caption
        to 20 batches' time (bench/mixed_load.py)."""
        stepped = False
        while self.decoders.busy and not self.stopping and (not stepped or self.decode_credit > 0):
            start = time.monotonic()
            self.decoders.step(self.cond)
            self.decode_credit -= time.monotonic() - start
            stepped = True
            if self.decode_credit > 0:  # another step follows: rows that arrived meanwhile join it
                with self.cond:
                    self.decoders.admit(self._live)
        self.decode_credit = 0.0  # never banked: idle decoders owe nothing later

    def _wait_for_work(self) -> GraphQueue | None:
        """Under the lock: the queue to serve now, or None when only decoding is due."""
        while not self.stopping:
            self.decoders.admit(self._live)
            now = time.monotonic()
            dues = [(d, q) for q in self.queues.values() if (d := q.due_in(now)) is not None]
            ready = [q for d, q in dues if d <= 0]
            if ready:  # the oldest waiting batch first
                return min(ready, key=lambda q: q.items[0].enqueued)
            if self.decoders.busy:
                return None
            self.cond.wait(min((d for d, _ in dues), default=None))
        return None

    def _run_batch(self, op: Op, batch: list[Item]) -> None:
        live = self._live(batch)
        if not live:
            return
        start = time.monotonic()
        for item in live:
            self.metrics.queued(op.name, start - item.enqueued)
        try:
            outputs = op.run(self.engine, [i.inputs for i in live])
            self.metrics.computed(op.name, time.monotonic() - start, sum(i.size for i in live))
            for item, out in zip(live, outputs, strict=True):
                item.resolve(out)
        except Exception as exc:
            if len(live) > 1:  # find the item at fault: the others still get their answers
                for item in live:
                    self._run_batch(op, [item])
                return
            log.exception("%s: %s failed", self.name, op.name)
            live[0].fail(exc)

    @staticmethod
    def _live(items: list[Item]) -> list[Item]:
        live = []
        for item in items:
            if item.cancelled:
                continue
            if item.expired:
                item.expire()
                continue
            live.append(item)
        return live
