"""Fake steps for tests/unit/test_gpu_suite.py: one that succeeds, fails, hangs, crashes."""

from __future__ import annotations

import os
import time

from .core import Ctx, step


@step("selftest_ok", 10, 10, 10, hidden=True)
def step_selftest_ok(ctx: Ctx) -> None:
    ctx.put("answer", 42)


@step("selftest_fail", 10, 10, 10, hidden=True)
def step_selftest_fail(ctx: Ctx) -> None:
    ctx.put("before", "kept")
    raise ValueError("planted failure")


@step("selftest_hang", 3, 3, 3, hidden=True)
def step_selftest_hang(ctx: Ctx) -> None:
    ctx.put("partial", 1)
    time.sleep(600)


@step("selftest_crash", 10, 10, 10, hidden=True)
def step_selftest_crash(ctx: Ctx) -> None:
    ctx.put("partial", 2)
    os._exit(3)  # as a segfaulting extension would: no traceback, no final write
