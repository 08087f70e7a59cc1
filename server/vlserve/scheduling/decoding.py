"""The decode side of a model's worker: one continuous-batching loop per DecoderGraph the
model has (a union BLIP checkpoint has one decoder for captions and answers, so their
rows share one loop), and the generate items whose groups run in them.

Every method runs under the worker's lock except `step`, which the worker thread runs
unlocked (the loops are touched by that thread only).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from ..engine.family import AnswerGenerator, Captioner, DecoderGraph, FamilyEngine
from ..engine.generation.loop import DecodeLoop
from ..errors import QueueFullError
from .items import Item

log = logging.getLogger("vlserve.scheduling")


@dataclass
class Generation:
    """A generate item's bookkeeping: which loop runs its groups, which are unfinished."""

    loop: int
    left: set[int] = field(default_factory=set)


def decoder_graphs(engine: FamilyEngine) -> list[DecoderGraph]:
    graphs = []
    for capability, attr in ((Captioner, "caption_decoder"), (AnswerGenerator, "answer_decoder")):
        graph = getattr(engine, attr, None) if engine.supports(capability) else None
        if graph is not None and all(graph is not g for g in graphs):
            graphs.append(graph)
    return graphs


class Decoders:
    def __init__(self, engine: FamilyEngine, max_rows: int, max_queue: int, metrics, name: str):
        self.graphs = decoder_graphs(engine)
        self.max_rows, self.max_queue, self.metrics, self.name = max_rows, max_queue, metrics, name
        self.loops = {id(g): DecodeLoop(g, max_rows=max_rows) for g in self.graphs}
        self.inbox: deque[Item] = deque()  # items not yet handed to their loop
        self.running: list[Item] = []  # items with groups in a loop

    @property
    def busy(self) -> bool:
        return any(loop.busy for loop in self.loops.values())

    def waiting_rows(self) -> int:
        return sum(i.size for i in self.inbox) + sum(g.max_rows for loop in self.loops.values() for g in loop.waiting)

    def put(self, item: Item, graph: DecoderGraph) -> None:
        if id(graph) not in self.loops:
            raise ValueError("this model has no such decoder")
        waiting = self.waiting_rows()
        if waiting + item.size > self.max_queue and waiting:
            raise QueueFullError(f"the decoder queue is full ({waiting} sequences waiting)")
        item.state = Generation(id(graph))
        self.inbox.append(item)
        self.report_depth()

    def admit(self, live) -> None:
        """Hand new items to their loop; drop cancelled ones, and queued ones past their deadline."""
        while self.inbox:
            item = self.inbox.popleft()
            if live([item]):
                item.state.left = set(range(len(item.inputs)))
                for group in item.inputs:
                    group.ticket = item
                    self.loops[item.state.loop].add(group)
                self.running.append(item)
        for item in list(self.running):
            waiting = any(g in self.loops[item.state.loop].waiting for g in item.inputs)
            if item.cancelled or (waiting and item.expired):
                self.stop(item)
                if not item.cancelled:
                    item.expire()
        self.report_depth()

    def stop(self, item: Item) -> None:
        """Drop what is left of an item's groups."""
        for group in item.inputs:
            self.loops[item.state.loop].drop(group)
        self.running.remove(item)

    def take_all(self) -> list[Item]:
        items = list(self.inbox) + list(self.running)
        self.inbox.clear()
        self.running.clear()
        return items

    def step(self, lock) -> None:
        """One step of every busy loop (unlocked), then their results (under `lock`)."""
        for key, loop in list(self.loops.items()):
            if not loop.busy:
                continue
            start, rows = time.monotonic(), loop.batch.rows
            try:
                finished = loop.step()
            except Exception as exc:  # a bookkeeping bug: the groups' own faults never get here
                log.exception("%s: decoder step failed", self.name)
                with lock:
                    for item in [i for i in self.running if i.state.loop == key]:
                        self.running.remove(item)
                        item.fail(exc)
                    self.loops[key] = DecodeLoop(loop.graph, max_rows=self.max_rows)
                continue
            self.metrics.computed("decoder", time.monotonic() - start, max(rows, 1))
            self.metrics.generated(rows)
            with lock:
                self._finish(finished)

    def _finish(self, finished) -> None:
        for group in finished:
            item = group.ticket
            if item is None or item not in self.running:
                continue
            if group.error is not None:  # only this request's work failed
                log.error("%s: a decode group failed: %r", self.name, group.error)
                self.stop(item)
                item.fail(group.error)
                continue
            item.state.left.discard(item.inputs.index(group))
            if not item.state.left:
                self.running.remove(item)
                item.resolve([g.results for g in item.inputs])
        self.report_depth()

    def report_depth(self) -> None:
        if self.loops:
            self.metrics.depth("decoder", self.waiting_rows())
