"""Step kernel_tests: pytest tests/kernels on the GPU (compiled, TRITON_INTERPRET unset),
the outcome per dtype from pytest_plugin.py."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from .core import PATHS, ROOT, Ctx, pump, step

SMOKE_KERNEL_TESTS = ["tests/kernels/test_package.py", "tests/kernels/test_cuda.py",
                      "tests/kernels/test_attention.py::test_float16",
                      "tests/kernels/test_decode.py::test_self_attention_ragged_lengths"]


def summarize_tests(tests: dict) -> dict:
    counts = collections.Counter(t["outcome"] for t in tests.values())
    by_dtype: dict = {}
    for t in tests.values():
        for d in t["dtypes"].split(","):
            by_dtype.setdefault(d, collections.Counter())[t["outcome"]] += 1
    failures = [{"test": k, "outcome": t["outcome"], "message": t.get("message", "")}
                for k, t in tests.items() if t["outcome"] in ("failed", "error")]
    slowest = sorted(tests.items(), key=lambda kv: -kv[1]["duration_s"])[:5]
    return {"counts": dict(counts), "by_dtype": {d: dict(c) for d, c in sorted(by_dtype.items())},
            "failures": failures[:40], "slowest": [(k, t["duration_s"]) for k, t in slowest]}


@step("kernel_tests", 130, 90, 90, kernels=True)
def step_kernel_tests(ctx: Ctx) -> None:
    import importlib.util

    tmp = Path(tempfile.mkdtemp(prefix="gpu_suite_pytest_"))
    shutil.copyfile(Path(__file__).with_name("pytest_plugin.py"), tmp / "gpu_suite_pytest_plugin.py")
    report = tmp / "report.json"
    env = dict(os.environ, GPU_SUITE_PYTEST_JSON=str(report))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp), *map(str, PATHS[:3]), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if not ctx.smoke:
        env.pop("TRITON_INTERPRET", None)  # the compiled kernels, never the interpreter
    targets = SMOKE_KERNEL_TESTS if ctx.smoke else ["tests/kernels"]
    cmd = [sys.executable, "-m", "pytest", *targets, "-q", "-rfE", "-p", "gpu_suite_pytest_plugin",
           "-p", "no:cacheprovider", "-o", "addopts=", f"--basetemp={tmp / 'basetemp'}"]
    if ctx.mode == "quick":
        cmd += ["-k", "not compile_for_cuda"]  # CI's check without a GPU; this run has the real one
    # compile-bound: Triton JIT in parallel workers; GPU_SUITE_XDIST=N overrides (0: none)
    workers = int(os.environ.get("GPU_SUITE_XDIST", "0" if ctx.smoke else str(min(8, os.cpu_count() or 1))))
    if workers > 0 and importlib.util.find_spec("xdist"):
        cmd += ["-n", str(workers)]
    ctx.put("command", " ".join(cmd))
    ctx.put("TRITON_INTERPRET", env.get("TRITON_INTERPRET"))
    # Same process group as this child: on our own timeout we record, then end the whole group.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = collections.deque(maxlen=40)
    reader = threading.Thread(target=pump, args=(proc.stdout, tail, lambda line: print(line, flush=True)),
                              daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=max(5.0, ctx.left() - 4))
        timed_out = False
    except subprocess.TimeoutExpired:
        rc, timed_out = None, True
    reader.join(timeout=2)
    saved = json.loads(report.read_text()) if report.is_file() else {}
    tests, meta = saved.get("tests", {}), saved.get("meta", {})
    ctx.data.update(summarize_tests(tests), exit_code=rc, timed_out=timed_out, n_tests=len(tests), pytest_meta=meta)
    summary = [line for line in tail if re.search(r"\d+ (passed|failed|skipped|error)", line)]
    ctx.data["summary_line"] = summary[-1] if summary else None
    ctx.data["kernels_ran"] = "interpreted (CPU)" if meta.get("TRITON_INTERPRET") == "1" else \
        (f"compiled on {meta.get('gpu')}" if meta.get("cuda") else "no CUDA: the GPU tests skipped")
    ctx.data["output_tail"] = list(tail)[-15:]
    if timed_out:
        ctx.write("timeout", f"pytest ran past the step budget; {len(tests)} tests recorded")
        os.killpg(os.getpgrp(), signal.SIGKILL)  # pytest, its xdist workers and this child
    if not tests and rc not in (0, 1):
        raise RuntimeError(f"pytest exited {rc} with no test recorded: {list(tail)[-5:]}")
    if not ctx.smoke and not meta.get("cuda"):
        raise RuntimeError(f"pytest saw no CUDA device ({ctx.data['kernels_ran']}): the kernels were not tested")
