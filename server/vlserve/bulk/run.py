"""The bulk loop: read items, skip those already written, run them in batches through the
model's Pipeline (the server's tasks and graph operations, called in-process), write one
row per item.

A bad item (missing or unreadable file, not an image, text too long or missing) becomes a
row with `error` and empty results; it never stops the job. Items are checked one by one
before their batch runs; should a batch still fail, its items run one at a time so only
the culprit gets the error.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError, VlserveError
from ..pipeline import Pipeline, load_model
from .jobs import Job, Options, make_job
from .readers import Item, open_input
from .writers import open_output


def _error(exc: BaseException) -> str:
    if isinstance(exc, VlserveError):
        return f"{exc.type}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _Ready:
    key: str
    image: object  # a decoded PIL image, or None when the job reads no image
    text: str | list[str] | None


def _prepare(job: Job, pipeline: Pipeline, item: Item) -> _Ready:
    """Decode and check one item (raises the error its row will carry)."""
    if item.error:
        raise _ItemError(item.error)
    text = item.text if item.text not in ("", []) else None
    if text is None and job.text == "required":
        raise InvalidInputError(f"the {job.name} job needs a text for each item; this one has none", param="text")
    if text is not None and job.text != "none":
        pipeline.engine.check_texts([text] if isinstance(text, str) else list(text), "text")
    image = None
    if job.needs_image():
        if item.image is None:
            raise InvalidInputError("the item has no image", param="image")
        image = pipeline.engine.load_image(item.image, "image")
    return _Ready(item.key, image, text)


class _ItemError(Exception):
    """An error a reader already recorded, passed through as it is."""


def prepare_batch(job: Job, pipeline: Pipeline, items: list[Item]) -> tuple[list[Item], dict, list[_Ready]]:
    """(items, error rows by key, the items ready to run): the CPU part, run ahead in a thread."""
    rows: dict[str, dict] = {}
    ready: list[_Ready] = []
    for item in items:
        try:
            ready.append(_prepare(job, pipeline, item))
        except Exception as exc:
            rows[item.key] = {"key": item.key, "error": str(exc) if isinstance(exc, _ItemError) else _error(exc)}
    return items, rows, ready


def finish_batch(job: Job, pipeline: Pipeline, items: list[Item], rows: dict, ready: list[_Ready]) -> list[dict]:
    """One row per item, in input order."""
    for group in _run_groups(job, pipeline, ready):
        rows.update(group)
    return [rows[item.key] for item in items]


def process(job: Job, pipeline: Pipeline, items: Iterable[Item], batch_size: int) -> Iterator[list[dict]]:
    """The rows of each batch of `batch_size` items, in input order: the one loop of a job, on
    one machine (run_bulk) and in each Ray worker (ray_data.py)."""

    def prepared():
        batch = []
        for item in items:
            batch.append(item)
            if len(batch) >= batch_size:
                yield prepare_batch(job, pipeline, batch)
                batch = []
        if batch:
            yield prepare_batch(job, pipeline, batch)

    batches = prepared()
    # reading and decoding the next batch overlaps the model's work on this one (torch frees the GIL)
    with ThreadPoolExecutor(1) as ahead:
        upcoming = ahead.submit(next, batches, None)
        while (batch := upcoming.result()) is not None:
            upcoming = ahead.submit(next, batches, None)
            yield finish_batch(job, pipeline, *batch)


def _run_groups(job, pipeline, ready: list[_Ready]):
    if not ready:
        return
    try:
        results = job.run(pipeline, [r.image for r in ready], [r.text for r in ready])
        yield {r.key: {"key": r.key, **res, "error": None} for r, res in zip(ready, results)}
    except Exception as exc:
        if len(ready) == 1:
            yield {ready[0].key: {"key": ready[0].key, "error": _error(exc)}}
            return
        for one in ready:  # find the culprit; the others still get their results
            yield from _run_groups(job, pipeline, [one])


class Progress:
    """A carriage-return line on stderr: rows, errors, throughput and ETA."""

    def __init__(self, name: str, total: int | None, already: int, stream=None, every: float = 0.5):
        self.name, self.total, self.already = name, total, already
        self.stream = stream if stream is not None else sys.stderr
        self.every, self.start, self.last = every, time.monotonic(), 0.0
        self.rows = self.errors = self.width = 0

    def update(self, rows: list[dict], final: bool = False) -> None:
        self.rows += len(rows)
        self.errors += sum(r.get("error") is not None for r in rows)
        now = time.monotonic()
        if not final and now - self.last < self.every:
            return
        self.last = now
        rate = self.rows / max(now - self.start, 1e-9)
        done = self.already + self.rows
        line = f"{self.name}: {done}" + (f"/{self.total}" if self.total is not None else "")
        line += f" rows ({self.errors} errors, {self.already} done before) {rate:.1f} items/s"
        if self.total is not None and rate > 0:
            line += f" ETA {_duration(max(self.total - done, 0) / rate)}"
        width, self.width = self.width, len(line)
        self.stream.write("\r" + line.ljust(width) + ("\n" if final else ""))
        self.stream.flush()


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def open_job(job: str | Job, model: str | Path | Pipeline, *, options: Options | None = None,
             device: str = "cpu", dtype: str = "float32") -> tuple[Job, Pipeline]:
    """The job and its model, loaded and checked before any item runs (here, or in each Ray worker)."""
    job = make_job(job, options) if isinstance(job, str) else job
    pipeline = model if isinstance(model, Pipeline) else load_model(model, device=device, dtype=dtype)
    job.check(pipeline)
    return job, pipeline


class Output:
    """Where a job's rows go: the writer (whose done keys the readers skip), the first row of a
    repeated key kept, the progress line and the counts of the summary."""

    def __init__(self, job: Job, reader, out: str | Path, fmt: str | None, part_rows: int, progress: bool):
        self.writer = open_output(out, job.columns, fmt, part_rows)
        self.already = len(self.writer.done)
        self.seen = set(self.writer.done)
        self.bar = Progress(job.name, reader.total(), self.already) if progress else None
        self.rows = self.errors = self.duplicates = 0

    def fresh(self, key: str) -> bool:
        """False for a key already written or seen: its first row stands."""
        if key in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(key)
        return True

    def write(self, rows: list[dict]) -> None:
        self.writer.write(rows)
        self.rows += len(rows)
        self.errors += sum(r["error"] is not None for r in rows)
        if self.bar:
            self.bar.update(rows)

    def close(self) -> None:
        self.writer.close()  # Parquet: the buffered rows become a last part, also on Ctrl-C
        if self.bar:
            self.bar.update([], final=True)

    def summary(self, job: Job, input, reader, out) -> dict:
        return {"job": job.name, "input": str(input), "input_kind": reader.kind, "out": str(out),
                "rows_written": self.rows, "errors": self.errors, "done_before": self.already,
                "duplicate_keys": self.duplicates}


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise InvalidInputError("batch size must be >= 1", param="--batch-size")


def run_bulk(job: str | Job, input: str | Path, out: str | Path, model: str | Path | Pipeline, *,
             batch_size: int = 16, fmt: str | None = None, kind: str = "auto", part_rows: int = 1024,
             options: Options | None = None, progress: bool = True, device: str = "cpu",
             dtype: str = "float32") -> dict:
    """Run a bulk job to completion (or resume one); returns a summary."""
    check_batch_size(batch_size)
    reader = open_input(input, kind)
    job, pipeline = open_job(job, model, options=options, device=device, dtype=dtype)
    output = Output(job, reader, out, fmt, part_rows, progress)
    fresh = (item for item in reader.items(skip=set(output.writer.done)) if output.fresh(item.key))
    try:
        for rows in process(job, pipeline, fresh, batch_size):
            output.write(rows)
    finally:
        output.close()
    return output.summary(job, input, reader, out)
