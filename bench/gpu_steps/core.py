"""What the driver and every step share: paths, targets, sizes per mode, the step registry,
and Ctx, a step's view of its run. Standard library only."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
DRIVER = BENCH / "gpu_suite.py"  # also each step's entry point (--child)
# Import paths the children need, the repository not being installed on the device. Not bench/:
# there `kernels` would name bench/kernels.py, which transformers probes for the hub's `kernels`.
PATHS = (ROOT / "server", ROOT / "kernels", ROOT)
# Issue 19's targets (H100/H200).
TARGETS = {"blip_base_images_per_s": 2000, "blip_large_images_per_s": 700, "p50_ms": 20.0,
           "x_transformers_b64": 4.0, "prefill_x_best_sdpa": 1.0, "decode_cross_x_sdpa": 2.0,
           "decode_cross_pct_copy_bw": 70.0}

# Sizes per mode. reps: timed calls at a batch > 1 (median); lat_runs: at batch 1 (p50).
MODES = {
    "full": dict(batches=(1, 64), tokens=20, reps=5, lat_runs=20, warmup=2, big_batch=256, total_s=420),
    "quick": dict(batches=(1, 64), tokens=20, reps=2, lat_runs=7, warmup=1, big_batch=0, total_s=240),
    "smoke": dict(batches=(1, 2), tokens=3, reps=1, lat_runs=2, warmup=1, big_batch=0, total_s=170),
}
RESERVE_S = 8.0  # a step stops starting measurements this close to its deadline


@dataclass(frozen=True)
class Step:
    name: str
    fn: Callable
    budget_s: float  # full mode; quick and smoke scale it
    quick_s: float
    smoke_s: float
    kernels: bool = False  # under TRITON_INTERPRET=1 in the CPU smoke run
    hidden: bool = False   # only when named (the unit test's fake steps)

    def budget(self, mode: str) -> float:
        return {"full": self.budget_s, "quick": self.quick_s, "smoke": self.smoke_s}[mode]


STEPS: dict[str, Step] = {}  # in run order: the order gpu_steps/__init__.py imports the step modules


def step(name, budget_s, quick_s, smoke_s, **kw):
    def register(fn):
        STEPS[name] = Step(name, fn, budget_s, quick_s, smoke_s, **kw)
        return fn
    return register


class Ctx:
    """What a step sees: its mode, deadline, output folder, and `put` for partial results
    (the JSON file is rewritten on every put, so a step killed at its budget keeps them)."""

    def __init__(self, name: str, mode: str, json_path: Path, deadline: float, out_dir: Path, cfg: dict):
        self.name, self.mode, self.json_path, self.deadline = name, mode, json_path, deadline
        self.out_dir, self.cfg = out_dir, cfg
        self.smoke = mode == "smoke"
        self.device = "cpu" if self.smoke else "cuda"
        self.data: dict = {}

    def left(self) -> float:
        return self.deadline - time.time()

    def put(self, key: str, value) -> None:
        self.data[key] = value
        self.write("running")

    def write(self, status: str, error: str | None = None) -> None:
        tmp = self.json_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"status": status, "error": error, "data": self.data}, indent=1, default=str))
        os.replace(tmp, self.json_path)


def load_bench(name: str, as_name: str | None = None):
    """A bench/ script as a module (bench/ itself stays off sys.path)."""
    import importlib.util

    as_name = as_name or name
    if as_name in sys.modules:
        return sys.modules[as_name]
    spec = importlib.util.spec_from_file_location(as_name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[as_name] = module  # dataclasses look their module up there; beit3_vs_unilm imports common
    spec.loader.exec_module(module)
    return module


def pump(stream, tail, emit: Callable[[str], None]) -> None:
    """A subprocess's output, line by line: kept in `tail`, passed to `emit`."""
    for line in stream:
        line = line.rstrip("\n")
        tail.append(line)
        emit(line)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-") or "unknown"
