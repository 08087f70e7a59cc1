"""A unit of queued work and how its result travels back to the event loop."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import DeadlineExceededError


@dataclass(eq=False)
class Item:
    """Work from one request for one graph: `inputs` covers `size` examples."""

    inputs: Any
    size: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    deadline: float  # time.monotonic() after which it must not start
    enqueued: float = field(default_factory=time.monotonic)
    state: Any = None  # op-specific bookkeeping (e.g. the decode groups of a generate item)

    @property
    def cancelled(self) -> bool:
        return self.future.cancelled()

    @property
    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def resolve(self, value) -> None:
        self._settle(value, None)

    def fail(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, value, error) -> None:
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, value, error)
        except RuntimeError:  # the event loop is closed: the server is gone, nobody waits
            pass

    def expire(self) -> None:
        self.fail(DeadlineExceededError("the request's deadline passed while it waited in the queue"))


def _settle(future: asyncio.Future, value, error) -> None:
    if future.done():  # cancelled by the client meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
