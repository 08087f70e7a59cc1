"""Running one call per item over many items: at most `concurrency` at a time, results in
input order, each failure kept with its item. The iterable is read lazily, so a generator of
a million paths never sits in memory at once. The server batches concurrent requests
together, so one image per request loses little."""

from __future__ import annotations

import asyncio
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


@dataclass
class ItemResult(Generic[T]):
    """The outcome for the item at `index`: its `value`, or the `error` it raised."""

    index: int
    value: T | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(progress: bool, items: Iterable, desc: str):
    if not progress:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn("progress=True needs tqdm: pip install 'vlserve-client[progress]'", stacklevel=3)
        return _NoBar()
    total = len(items) if hasattr(items, "__len__") else None
    return tqdm(total=total, desc=desc, unit="item")


def _check(concurrency: int) -> None:
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")


def run_many(fn: Callable[[Any], T], items: Iterable, *, concurrency: int, progress: bool,
             desc: str) -> list[ItemResult[T]]:
    _check(concurrency)
    source = enumerate(items)
    lock, stop = threading.Lock(), threading.Event()
    results: dict[int, ItemResult[T]] = {}
    bar = _bar(progress, items, desc)

    def worker() -> None:
        while not stop.is_set():
            with lock:  # a generator may not be advanced from two threads at once
                pair = next(source, None)
            if pair is None:
                return
            i, item = pair
            try:
                results[i] = ItemResult(i, value=fn(item))
            except Exception as exc:  # noqa: BLE001 - reported with its item, the others go on
                results[i] = ItemResult(i, error=exc)
            bar.update(1)

    try:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="vlserve-client") as pool:
            workers = [pool.submit(worker) for _ in range(concurrency)]
            try:
                for w in workers:
                    w.result()  # re-raises only what the iterable itself raised
            except BaseException:
                stop.set()  # Ctrl-C or a broken iterable: finish the calls in flight, start no more
                raise
    finally:
        bar.close()
    return [results[i] for i in sorted(results)]


async def arun_many(fn: Callable[[Any], Awaitable[T]], items: Iterable, *, concurrency: int, progress: bool,
                    desc: str) -> list[ItemResult[T]]:
    _check(concurrency)
    source = enumerate(items)
    results: dict[int, ItemResult[T]] = {}
    bar = _bar(progress, items, desc)

    async def worker() -> None:
        for i, item in source:  # shared: each worker takes the next item when it is free
            try:
                results[i] = ItemResult(i, value=await fn(item))
            except Exception as exc:  # noqa: BLE001 - reported with its item, the others go on
                results[i] = ItemResult(i, error=exc)
            bar.update(1)

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:  # a broken iterable, or we were cancelled: stop the other workers too
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        bar.close()
    return [results[i] for i in sorted(results)]
