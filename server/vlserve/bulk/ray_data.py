"""Bulk jobs on Ray Data (`vlserve bulk ... --ray ADDRESS`, or `run_on_ray`): the one-machine
job (run.py) with its input spread over an actor pool on a Ray cluster.

input   the reader's partitions (a few batches of a folder or of a JSONL / CSV manifest's rows,
        one WebDataset shard, one Parquet row group), as a Ray dataset of small rows
run     `map_batches` over an actor pool: each worker loads the model once (CPU, or a GPU with
        gpus_per_worker) and takes a partition at a time: it reads it with the one-machine reader
        and runs run.process over its items, the one-machine loop (decoding ahead in a thread,
        checks, error rows, a failed batch retried item by item), so keys, texts and bad items
        come out exactly as on one machine; no image goes through Ray's object store
write   the result rows (small) stream back to the driver in input order and go through the
        one-machine writers: the same JSONL file or Parquet parts, durable

Resumable like the one-machine job: the keys already in --out are skipped (a worker does not
even open their images) and a rerun writes only the rest; rows reach --out a partition at a
time, so a kill loses at most the partitions in flight. The input and the model folder must be
at the same path on the driver and every worker node (a shared file system); paths are made
absolute, since workers do not run in the driver's folder, so an error row names the absolute
path. A WebDataset job spreads over at most as many workers as it has shards. ray is imported
only here (`pip install 'vlserve[ray]'`).
"""

from __future__ import annotations

import pickle
from contextlib import contextmanager
from pathlib import Path

from ..errors import InvalidInputError, VlserveError
from ..pipeline import Pipeline
from .jobs import Job, Options, make_job
from .readers import open_input
from .run import Output, check_batch_size, open_job, process
from .writers import row_schema

PART_BATCHES = 4  # batches per partition at most: the decoding-ahead thread has work, and a kill loses little


class RayMissingError(VlserveError):
    type = "missing_dependency"


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayMissingError("bulk jobs on Ray need Ray Data: pip install 'vlserve[ray]'", param="--ray") from exc
    return ray


class _Worker:
    """One per Ray worker: the loaded model, and the one-machine loop over each partition it is given."""

    def __init__(self, job: Job, model: str, device: str, dtype: str, threads: int, reader, skip: set[str],
                 batch_size: int):
        import torch

        torch.set_num_threads(threads)
        self.reader, self.skip, self.batch_size = reader, skip, batch_size
        self.failed = None
        try:
            self.job, self.pipeline = open_job(job, model, device=device, dtype=dtype)
        except Exception as exc:  # raised with the first partition: from a constructor Ray reports only "actor died"
            self.failed = exc
        self.schema = row_schema(job.columns)

    def __call__(self, batch):
        import pyarrow as pa

        if self.failed is not None:
            raise self.failed
        for part in batch.column("part").to_pylist():
            items = self.reader.read_partition(pickle.loads(part), self.skip)
            for rows in process(self.job, self.pipeline, items, self.batch_size):
                yield pa.Table.from_pylist([{c: r.get(c) for c in self.schema.names} for r in rows],
                                           schema=self.schema)


def _rows(table, job: Job):
    """Arrow rows back to the one-machine job's dicts: an error row has only key and error, a
    result row the results the job gave (score without an itm head has no itm)."""
    for r in table.to_pylist():
        if r["error"] is not None:
            yield {"key": r["key"], "error": r["error"]}
        else:
            yield {"key": r["key"], **{c: r[c] for c in job.columns if r[c] is not None}, "error": None}


def _connect(ray, address: str) -> bool:
    """Join (or start) the cluster; True when this call started Ray and should shut it down."""
    if ray.is_initialized():
        return False
    if address == "local":
        ray.init(address="local", include_dashboard=False)
    else:
        ray.init(address=address)
    return True


def run_on_ray(job: str | Job, input: str | Path, out: str | Path, model: str | Path, *, address: str = "local",
               workers: int = 1, gpus_per_worker: float = 0, cpus_per_worker: float = 1, batch_size: int = 16,
               fmt: str | None = None, kind: str = "auto", part_rows: int = 1024, options: Options | None = None,
               progress: bool = True, device: str = "cpu", dtype: str = "float32") -> dict:
    """Run a bulk job on a Ray cluster to completion (or resume one); returns run_bulk's summary
    and the cluster's part. `address`: "local" starts a Ray instance for this run, "auto" joins
    the cluster of this node, "ray://host:10001" one through Ray Client; when Ray is already
    initialised in this process it is used as it is. `workers` actors each hold the model, with
    `cpus_per_worker` CPUs (its torch threads) and `gpus_per_worker` GPUs (> 0: the model runs on
    the worker's GPU)."""
    ray = _ray()
    check_batch_size(batch_size)
    if workers < 1:
        raise InvalidInputError("the Ray job needs at least one worker", param="--ray-workers")
    if isinstance(model, Pipeline):
        raise TypeError("each Ray worker loads the model itself: pass its folder, not a loaded Pipeline")
    if gpus_per_worker > 0 and device == "cpu":
        device = "cuda"  # Ray gives each worker its own GPU(s) through CUDA_VISIBLE_DEVICES
    reader = open_input(Path(input).resolve(), kind)
    job = make_job(job, options) if isinstance(job, str) else job
    output = Output(job, reader, out, fmt, part_rows, progress)
    started = False
    try:
        started = _connect(ray, address)
        with _data_context(ray):
            for table in _results(ray, reader, set(output.writer.done), job, str(Path(model).resolve()), workers,
                                  gpus_per_worker, cpus_per_worker, batch_size, device, dtype):
                output.write([r for r in _rows(table, job) if output.fresh(r["key"])])
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, VlserveError):  # the job's own error (a model that cannot serve it), plainly
            raise exc.cause from None
        raise
    finally:
        output.close()
        if started:
            ray.shutdown()
    return output.summary(job, input, reader, out) | {
        "ray": {"address": address, "workers": workers, "gpus_per_worker": gpus_per_worker,
                "cpus_per_worker": cpus_per_worker}}


@contextmanager
def _data_context(ray):
    context = ray.data.DataContext.get_current()
    names = ("enable_progress_bars", "raise_original_map_exception")
    saved = context.execution_options.preserve_order, [getattr(context, n, None) for n in names]
    # input order out, so a repeated key keeps its first row as on one machine; our own progress
    # line; a worker's error as it is raised, not as Ray Data's UserCodeException
    context.execution_options.preserve_order = True
    context.enable_progress_bars, context.raise_original_map_exception = False, True
    try:
        yield
    finally:
        context.execution_options.preserve_order = saved[0]
        for name, value in zip(names, saved[1]):
            setattr(context, name, value)


def _results(ray, reader, skip, job, model, workers, gpus, cpus, batch_size, device, dtype):
    """The result blocks, as they come."""
    total = reader.total()
    # small inputs in smaller partitions, so that every worker gets some
    batches = PART_BATCHES if total is None else max(1, min(PART_BATCHES, total // (batch_size * workers * 4)))
    parts = reader.partitions(batch_size * batches)
    if not parts:
        return
    ds = ray.data.from_items([{"part": pickle.dumps(p)} for p in parts], override_num_blocks=len(parts))
    results = ds.map_batches(
        _Worker, batch_size=1, batch_format="pyarrow", num_cpus=cpus, num_gpus=gpus or None,
        compute=ray.data.ActorPoolStrategy(size=workers),
        fn_constructor_kwargs={"job": job, "model": model, "device": device, "dtype": dtype,
                               "threads": max(1, int(cpus)), "reader": reader, "skip": skip,
                               "batch_size": batch_size})
    yield from results.iter_batches(batch_size=None, batch_format="pyarrow")
