"""The driver's side of a step: its own process group, its output logged with its name, killed
with everything it started at its budget; what it wrote read back as the step's record."""

from __future__ import annotations

import collections
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .core import DRIVER, ROOT, Step, pump


class Log:
    """Everything printed also goes to $OUT/gpu_suite.log."""

    def __init__(self, path: Path):
        self.f = path.open("a")
        self.lock = threading.Lock()

    def __call__(self, line: str = "") -> None:
        with self.lock:
            try:
                print(line, flush=True)
            except (BrokenPipeError, OSError):  # a closed stdout must not end the suite; the log file stays
                pass
            self.f.write(line + "\n")
            self.f.flush()


CURRENT: dict = {}  # the running child, for the SIGTERM handler


def run_child(st: Step, mode: str, budget: float, args, log: Log, env: dict) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"gpu_suite_{st.name}_"))
    child_json = tmp / "step.json"
    deadline = time.time() + budget
    cmd = [sys.executable, str(DRIVER), "--child", st.name, "--mode", mode,
           "--child-json", str(child_json), "--child-deadline", str(deadline), "--out", str(args.out)]
    if args.batches:
        cmd += ["--batches", args.batches]
    if args.tokens:
        cmd += ["--tokens", str(args.tokens)]
    child_env = dict(env)
    if mode == "smoke" and st.kernels:
        child_env["TRITON_INTERPRET"] = "1"  # the CPU smoke run only
    else:
        child_env.pop("TRITON_INTERPRET", None)
    t0 = time.time()
    # Own process group (not a new session: the device ends leftover processes of the session),
    # so that a timeout ends the step with everything it started.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, process_group=0)
    CURRENT["proc"] = proc
    tail = collections.deque(maxlen=30)
    reader = threading.Thread(target=pump, args=(proc.stdout, tail, lambda line: log(f"[{st.name}] {line}")),
                              daemon=True)
    reader.start()
    killed = False
    try:
        proc.wait(timeout=budget + 3)  # the child stops itself first; this is the backstop
    except subprocess.TimeoutExpired:
        killed = True
        kill_group(proc)
    reader.join(timeout=5)
    CURRENT.pop("proc", None)
    wall = time.time() - t0
    rec = {"status": None, "wall_s": round(wall, 2), "budget_s": round(budget, 1), "returncode": proc.returncode}
    try:
        child = json.loads(child_json.read_text())
    except (OSError, ValueError):
        child = {"status": None, "error": None, "data": {}}
    shutil.rmtree(tmp, ignore_errors=True)
    rec["data"] = child.get("data", {})
    if killed:
        rec["status"], rec["error"] = "timeout", f"killed at its budget of {budget:.0f} s (partial data kept)"
    elif child.get("status") == "timeout":
        rec["status"], rec["error"] = "timeout", child.get("error")
    elif child.get("status") == "ok" and proc.returncode == 0:
        rec["status"] = "ok"
    elif child.get("status") == "error":
        rec["status"], rec["error"] = "error", child.get("error")
    else:
        rec["status"] = "crashed"
        rec["error"] = f"exit code {proc.returncode} without a result; last output: " + " | ".join(list(tail)[-5:])
    if rec["status"] != "ok":
        rec["log_tail"] = list(tail)
    return rec


def kill_group(proc):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue
