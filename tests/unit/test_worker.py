"""The device worker's batching rules, with a test op beside BLIP's."""

import asyncio
import time

import pytest

from vlserve.errors import DeadlineExceededError, QueueFullError
from vlserve.scheduling.ops import Op
from vlserve.scheduling.worker import DeviceWorker, GraphQueue, Limits

calls = []


def double(engine, inputs):
    calls.append([x for x in inputs])
    if any(x < 0 for x in inputs):
        raise ValueError("negative input")
    return [2 * x for x in inputs]


@pytest.fixture
def worker(engine):
    w = DeviceWorker(engine, Limits(max_batch_size=4, max_queue_delay_ms=30, max_queue_size=6))
    w.queues["double"] = GraphQueue(Op("double", double, size=lambda x: 1, cut=None, join=None), w.limits)
    calls.clear()
    w.start()
    yield w
    w.stop()


def run(coro):
    return asyncio.run(coro)


def later(seconds=30.0):
    return time.monotonic() + seconds


def test_items_from_concurrent_callers_share_a_batch(worker):
    async def go():
        items = [worker.submit("double", i, 1, later()) for i in range(3)]
        return await asyncio.gather(*(i.future for i in items))

    assert run(go()) == [0, 2, 4]
    assert calls == [[0, 1, 2]]


def test_batches_respect_the_size_limit(worker):
    async def go():
        items = [worker.submit("double", i, 2, later()) for i in range(3)]  # 2 examples each, max 4
        return await asyncio.gather(*(i.future for i in items))

    assert run(go()) == [0, 2, 4]
    assert [len(c) for c in calls] == [2, 1]


def test_a_failing_item_does_not_take_its_batch_down(worker):
    async def go():
        items = [worker.submit("double", x, 1, later()) for x in (1, -1, 3)]
        return await asyncio.gather(*(i.future for i in items), return_exceptions=True)

    a, b, c = run(go())
    assert (a, c) == (2, 6) and isinstance(b, ValueError)


def test_expired_and_cancelled_items_do_not_run(worker):
    async def go():
        stale = worker.submit("double", 5, 1, time.monotonic() - 1)
        gone = worker.submit("double", 6, 1, later())
        gone.future.cancel()
        fresh = worker.submit("double", 7, 1, later())
        return await asyncio.gather(stale.future, fresh.future, return_exceptions=True)

    stale, fresh = run(go())
    assert isinstance(stale, DeadlineExceededError) and fresh == 14
    assert calls == [[7]]


def test_a_full_queue_refuses_at_once(worker):
    async def go():
        with worker.cond:  # hold the worker so the queue fills
            worker.submit("double", 1, 4, later())
            worker.submit("double", 1, 2, later())
            with pytest.raises(QueueFullError):
                worker.submit("double", 1, 1, later())

    run(go())


class FakeDecoders:
    """Decoders whose every step takes one tick of a fake clock."""

    def __init__(self, clock: list[float], steps_left: int):
        self.clock, self.steps_left, self.steps, self.admitted = clock, steps_left, 0, 0

    @property
    def busy(self) -> bool:
        return self.steps_left > 0

    def step(self, lock) -> None:
        self.clock[0] += 1.0
        self.steps, self.steps_left = self.steps + 1, self.steps_left - 1

    def admit(self, live) -> None:
        self.admitted += 1


@pytest.mark.parametrize("credit, left, steps, admits", [(0.0, 100, 1, 0), (5.0, 100, 5, 4), (5.5, 100, 6, 5),
                                                         (9.0, 3, 3, 3), (3.0, 0, 0, 0)])
def test_decoding_gets_as_much_device_time_as_the_encoder_batch_before_it(engine, monkeypatch, credit, left, steps,
                                                                          admits):
    """One step per encoder batch starved captions under steady vision load; now the decoders
    step until they have had the batch's time (at least one step when busy), never banking it."""
    import vlserve.scheduling.worker as worker_module

    clock = [0.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock[0])
    w = DeviceWorker(engine)
    w.decoders = FakeDecoders(clock, left)
    w.decode_credit = credit
    w._decode_share()
    assert w.decoders.steps == steps
    assert w.decode_credit == 0.0
    assert w.decoders.admitted == admits  # while time is left, rows that arrived join the next step
