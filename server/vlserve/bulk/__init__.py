"""Bulk jobs on one machine: caption, embed, score or capfilt a folder of images, a manifest
or WebDataset shards into Parquet or JSONL, resumably (`vlserve bulk`, or `run_bulk`); the
same jobs on a Ray cluster with `--ray` (`run_on_ray`, ray_data.py).

torch loads on first use, so the CLI's parser stays light."""

__all__ = ["JOBS", "Options", "run_bulk", "run_on_ray"]


def __getattr__(name):
    if name in ("JOBS", "Options"):
        from . import jobs

        return getattr(jobs, name)
    if name == "run_bulk":
        from .run import run_bulk

        return run_bulk
    if name == "run_on_ray":  # Ray is imported when it is called
        from .ray_data import run_on_ray

        return run_on_ray
    raise AttributeError(f"module 'vlserve.bulk' has no attribute {name!r}")
