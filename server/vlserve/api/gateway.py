"""The gateway's state and the one path every task request takes: pick the model, set the
deadline, run the task while watching for the client going away, count the outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import Request

from ..errors import DeadlineExceededError, NotReadyError, VlserveError
from ..metrics import Metrics
from ..repository.repository import ModelRepository
from ..scheduling.runner import in_pool
from ..settings import Settings
from .decoding import PixelBudget

log = logging.getLogger("vlserve.api")


class ClientGone(Exception):
    """The client disconnected; nobody is left to answer."""


class Gateway:
    def __init__(self, settings: Settings, repository: ModelRepository | None = None, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.repository = repository or ModelRepository(settings, self.metrics)
        self.pool = ThreadPoolExecutor(settings.preprocess_threads, thread_name_prefix="vlserve-preprocess")
        self.pixel_budget = PixelBudget(settings.max_decode_pixels)
        self.draining = False
        self.in_flight = 0  # requests between arrival and answer (counted by middleware.RequestGuard)
        self._grace_over = asyncio.Event()  # set when draining time is up

    # -- lifecycle ------------------------------------------------------------------------

    async def load_models(self) -> None:
        await asyncio.to_thread(self.repository.load_all)

    @property
    def ready(self) -> bool:
        return self.repository.ready and not self.draining

    def not_ready_reason(self) -> str:
        return "draining" if self.draining else self.repository.not_ready_reason()

    async def drain(self, grace_s: float | None = None, answer_s: float = 5.0) -> bool:
        """Stop taking requests and wait for in-flight ones (True: all finished in time).
        Those still running when the grace ends are answered 503 (retry elsewhere); this
        waits up to `answer_s` more for those answers to go out."""
        self.draining = True
        grace = self.settings.drain_grace_s if grace_s is None else grace_s
        finished = await self._until_idle(grace)
        if not finished:
            log.warning("drain grace over with %d request(s) in flight: answering them 503", self.in_flight)
            self._grace_over.set()
            await self._until_idle(answer_s)
        return finished

    async def _until_idle(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.in_flight == 0

    def close(self) -> None:
        self.repository.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- requests -----------------------------------------------------------------------------

    def request_started(self, task: str) -> None:
        self.in_flight += 1
        self.metrics.in_flight_add(1)
        self.metrics.request_received(task)

    def request_finished(self, model: str, task: str, outcome: str, status: int, seconds: float) -> None:
        self.in_flight -= 1
        self.metrics.in_flight_add(-1)
        self.metrics.request_done(model, task, outcome, status, seconds)

    async def in_thread(self, fn, *args):
        return await in_pool(self.pool, fn, *args)

    async def run(self, request: Request, task: str, timeout_s: float | None, work, **roles):
        """Run `work(served, models)` for one request; every accepted request gets one answer.

        roles: role -> (model name or None, the task it must serve). The first role is the
        request's model (metrics count under it); another role named None is that model.
        `work` gets {role: ServedModel} and {role: TaskModel}: one TaskModel per model."""
        start = time.monotonic()
        served = {}
        for role, (name, need) in roles.items():
            first = not served
            served[role] = self.repository.pick(name, need, role) if first or name is not None \
                else next(iter(served.values()))
        primary = next(iter(served.values()))
        info = request.scope.get("vlserve", {})
        info["model"] = primary.name
        timeout = min(self.settings.request_timeout_s, timeout_s or float("inf"))
        by_model = {}
        for model in served.values():
            if id(model) not in by_model:
                by_model[id(model)] = model.task_model(start + timeout, self.pool)
        models = {role: by_model[id(m)] for role, m in served.items()}
        for (role, (_, need)), model in zip(roles.items(), served.values()):
            model.require(need, role)
        try:
            return await self._watched(request, work(served, models), start + timeout)
        except VlserveError as exc:
            if self._submitted(models) and not isinstance(exc, DeadlineExceededError):
                info["outcome"] = "failed"  # its work had begun
            raise
        finally:
            if self._submitted(models):
                self.metrics.request_accepted(primary.name, task)

    @staticmethod
    def _submitted(models: dict) -> bool:
        return any(m.runner.submitted for m in models.values())

    async def _watched(self, request: Request, coro, deadline: float):
        work = asyncio.ensure_future(coro)
        gone = asyncio.ensure_future(_disconnected(request))
        watch = {work, gone, asyncio.ensure_future(self._grace_over.wait())}
        try:
            done, _ = await asyncio.wait(watch, timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                return work.result()
            work.cancel()  # cancels its queued and running graph work too
            await asyncio.gather(work, return_exceptions=True)
            if gone in done:
                raise ClientGone()
            if done:  # the drain grace is over
                raise NotReadyError("the server shut down before this request finished; send it again")
            raise DeadlineExceededError("the request did not finish within its deadline")
        finally:
            for task in watch:
                task.cancel()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
