"""The gateway's state and the one path every task request takes: pick the model, set the
deadline, run the task while watching for the client going away, count the outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import Request

from ..errors import (DeadlineExceededError, NotReadyError, QueueFullError, UnauthorizedError, VlserveError)
from ..metrics import Metrics
from ..repository.repository import ModelRepository
from ..settings import Settings
from .errors import status_of

log = logging.getLogger("vlserve.api")


class ClientGone(Exception):
    """The client disconnected; nobody is left to answer."""


class Gateway:
    def __init__(self, settings: Settings, repository: ModelRepository | None = None, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.repository = repository or ModelRepository(settings, self.metrics)
        self.pool = ThreadPoolExecutor(settings.preprocess_threads, thread_name_prefix="vlserve-preprocess")
        self.draining = False
        self.in_flight = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def load_models(self) -> None:
        await asyncio.to_thread(self.repository.load_all)

    @property
    def ready(self) -> bool:
        return self.repository.ready and not self.draining

    async def drain(self, grace_s: float | None = None) -> bool:
        """Stop taking requests and wait for in-flight ones (True: all finished in time)."""
        self.draining = True
        grace = self.settings.drain_grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.in_flight == 0

    def close(self) -> None:
        self.repository.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- requests -----------------------------------------------------------------------------

    def authorize(self, request: Request) -> None:
        key = self.settings.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() \
            or request.headers.get("x-api-key", "")
        if given != key.get_secret_value():
            raise UnauthorizedError("missing or wrong API key (send 'Authorization: Bearer <key>')")

    async def in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def run(self, request: Request, task: str, model_name: str | None, timeout_s: float | None, work):
        """Run `work(model, runner)` for one request; every accepted request gets one answer."""
        start = time.monotonic()
        if self.draining:
            raise NotReadyError("the server is shutting down")
        model = self.repository.pick(model_name, task)
        timeout = min(self.settings.request_timeout_s, timeout_s or float("inf"))
        runner = model.runner(start + timeout)
        model.require(task)
        self.in_flight += 1
        self.metrics.in_flight_add(1)
        outcome, status = "failed", 500
        try:
            result = await self._watched(request, work(model, runner), start + timeout)
            outcome, status = "succeeded", 200
            return result
        except ClientGone:
            outcome, status = "cancelled", 499
            raise
        except asyncio.CancelledError:
            outcome, status = "cancelled", 499
            raise
        except DeadlineExceededError as exc:
            outcome, status = "expired", status_of(exc)
            raise
        except QueueFullError as exc:
            outcome, status = ("failed" if runner.submitted else "rejected"), status_of(exc)
            raise
        except VlserveError as exc:
            outcome, status = ("failed" if runner.submitted else "invalid"), status_of(exc)
            raise
        finally:
            self.in_flight -= 1
            self.metrics.in_flight_add(-1)
            if runner.submitted:
                self.metrics.request_accepted(model.name, task)
            self.metrics.request_done(model.name, task, outcome, status, time.monotonic() - start)

    async def _watched(self, request: Request, coro, deadline: float):
        work = asyncio.ensure_future(coro)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({work, gone}, timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                return work.result()
            work.cancel()  # cancels its queued and running graph work too
            await asyncio.gather(work, return_exceptions=True)
            if gone in done:
                raise ClientGone()
            raise DeadlineExceededError("the request did not finish within its deadline")
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
