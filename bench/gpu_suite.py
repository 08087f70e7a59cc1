"""One prepared run on a lent GPU (issue 19): kernel tests, kernel benchmark, end-to-end captioning.

Runs, each step in its own subprocess with a wall-clock budget (a failing, crashing or hanging
step is recorded and the suite goes on; a CUDA error cannot poison the next step's context):

    env             GPU, driver, versions, which optional packages import, the engine's import path
    kernel_tests    pytest tests/kernels on the GPU (compiled, TRITON_INTERPRET unset), outcome per dtype
    kernel_bench    bench/kernels.py: our Triton kernels vs every SDPA backend, case by case
    e2e_blip_base   captioning, random weights: vlserve (bf16) vs transformers generate (fp16),
    e2e_blip_large    greedy and 3 beams, 20 new tokens, batch 64 (images/s) and 1 (p50 latency)
    e2e_coca        the same against open_clip, e2e_beit3 against unilm's BEiT-3, where importable
    e2e_beit3         (else vlserve alone, "reference unavailable")

and writes $OUT/gpu_suite-<gpu>.json (rewritten after every step), $OUT/kernels-<gpu>.json
(bench/kernels.py's own format) and $OUT/gpu_suite.log, then prints a short table last.

    python3 bench/gpu_suite.py --out $OUT                 # the device run (~7 min; see bench/README.md)
    python3 bench/gpu_suite.py --out $OUT --quick         # fewer repeats, smaller budgets (~4 min)
    python3 bench/gpu_suite.py --only kernels,e2e         # groups: kernels, e2e, blip; or step names
    python3 bench/gpu_suite.py --cpu-smoke --out /tmp/s   # every step at tiny sizes on the CPU
    python3 bench/gpu_suite.py --fetch-wheels             # here, with a network: .whl/ for the device

The device has no fastapi/uvicorn and no pydantic: the engine needs pydantic and pydantic-settings
(GenerationParams, the engines' options, scheduling's Limits read vlserve.settings), so the suite
installs bench/gpu_suite_requirements.txt's wheels from .whl/ (carry it) into a temporary folder when
they are missing. Server-only packages are made unimportable in every step but the pytest one, as
on the device, and each e2e step fails if one was imported anyway.

This file is the driver (the command line, step selection, budgets, the JSON, the table) and
each step's entry point (--child); the steps and the plumbing are bench/gpu_steps/, imported by
path so that bench/ stays off sys.path. Only the standard library is imported at the top, here
and in gpu_steps: the parent process never touches CUDA.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _import_gpu_steps() -> None:
    """bench/gpu_steps as the package `gpu_steps`, by its path: bench/ itself stays off sys.path
    (its kernels.py would shadow the Hub's `kernels`, which transformers probes)."""
    if "gpu_steps" not in sys.modules:
        package = Path(__file__).resolve().parent / "gpu_steps" / "__init__.py"
        spec = importlib.util.spec_from_file_location("gpu_steps", package)
        sys.modules["gpu_steps"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["gpu_steps"])


_import_gpu_steps()
from gpu_steps.child import child_main
from gpu_steps.core import MODES, PATHS, ROOT, STEPS, TARGETS, slug
from gpu_steps.launch import CURRENT, Log, kill_group, run_child
from gpu_steps.report import table, targets_met
from gpu_steps.wheels import ensure_wheels, fetch_wheels

GROUPS = {"kernels": ("kernel_tests", "kernel_bench"), "e2e": ("e2e_blip_base", "e2e_blip_large", "e2e_coca",
                                                              "e2e_beit3"),
          "blip": ("e2e_blip_base", "e2e_blip_large"),
          "selftest": ("selftest_ok", "selftest_fail", "selftest_hang", "selftest_crash")}


def select_steps(only: str | None, skip: str | None = None) -> list[str]:
    """Step names in run order; `env` first unless skipped (it names the GPU for the file name)."""
    def expand(text):
        names = []
        for part in filter(None, (p.strip() for p in (text or "").split(","))):
            if part in GROUPS:
                names += GROUPS[part]
            elif part in STEPS:
                names.append(part)
            elif f"e2e_{part}" in STEPS:  # blip_base, coca, ... without the prefix
                names.append(f"e2e_{part}")
            else:
                raise SystemExit(f"unknown step {part!r}; steps: {', '.join(STEPS)}; groups: {', '.join(GROUPS)}")
        return names
    wanted = set(expand(only)) if only else {n for n, s in STEPS.items() if not s.hidden}
    wanted.add("env")
    wanted -= set(expand(skip))
    return [n for n in STEPS if n in wanted]


def suite_path(out: Path, gpu: str) -> Path:
    return out / f"gpu_suite-{slug(gpu)}.json"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="output folder (default $OUT, else bench/results/gpu_suite)")
    ap.add_argument("--only", default=None, help="steps or groups, comma-separated (env always runs)")
    ap.add_argument("--skip", default=None, help="steps or groups to leave out")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and smaller budgets")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU, kernels interpreted")
    ap.add_argument("--total-budget", type=float, default=None, help="seconds for the whole suite")
    ap.add_argument("--budget", action="append", default=[], metavar="STEP=S", help="one step's budget")
    ap.add_argument("--batches", default=None, help="e2e batch sizes (default 1,64; smoke 1,2)")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per caption (default 20)")
    ap.add_argument("--fetch-wheels", action="store_true", help="download the device's wheels into .whl and exit")
    ap.add_argument("--force-wheels", action="store_true", help="install .whl's wheels even where not missing")
    ap.add_argument("--list", action="store_true", help="print the steps and their budgets")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-json", help=argparse.SUPPRESS)
    ap.add_argument("--child-deadline", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    if args.fetch_wheels:
        return fetch_wheels()
    mode = "smoke" if args.cpu_smoke else ("quick" if args.quick else "full")
    names = select_steps(args.only, args.skip)
    overrides = {}
    for item in args.budget:
        k, _, v = item.partition("=")
        overrides[k if k in STEPS else f"e2e_{k}"] = float(v)
    if args.list:
        for n in names:
            print(f"{n:<16} {overrides.get(n, STEPS[n].budget(mode)):6.0f} s")
        return 0
    args.out = Path(args.out or os.environ.get("OUT") or ROOT / "bench" / "results" / "gpu_suite").resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "gpu_suite.log")
    total = args.total_budget or MODES[mode]["total_s"]
    start = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*map(str, PATHS[:3]), env.get("PYTHONPATH")]))
    suite = {"suite": {"argv": sys.argv[1:], "mode": mode, "steps": names, "total_budget_s": total,
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "targets": TARGETS,
                       "git": _git_head()},
             "wheels": ensure_wheels(args.force_wheels, log, env), "steps": {}}
    gpu = "cpu-smoke" if mode == "smoke" else "unknown"
    path = suite_path(args.out, gpu)

    def save():
        suite["suite"]["wall_s"] = round(time.time() - start, 1)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(suite, indent=2, default=str) + "\n")
        os.replace(tmp, path)

    def on_term(signum, frame):  # the device's timeout: keep what we have
        if "proc" in CURRENT:
            kill_group(CURRENT["proc"])
        suite["suite"]["terminated"] = f"signal {signum}"
        save()
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    log(f"gpu_suite: mode {mode}, steps {', '.join(names)}, total budget {total:.0f} s, out {args.out}")
    for n in names:
        st = STEPS[n]
        left = total - (time.time() - start) - 5
        wanted = overrides.get(n, st.budget(mode))
        budget = min(wanted, left)
        if budget < min(10, wanted):
            suite["steps"][n] = {"status": "skipped", "error": f"suite budget spent ({left:.0f} s left)"}
            log(f"== {n}: skipped, suite budget spent")
            save()
            continue
        log(f"== {n} (budget {budget:.0f} s)")
        rec = run_child(st, mode, budget, args, log, env)
        suite["steps"][n] = rec
        log(f"== {n}: {rec['status']} in {rec['wall_s']:.1f} s" + (f": {rec['error'].splitlines()[0]}"
                                                                   if rec.get("error") else ""))
        if n == "env" and rec["status"] == "ok" and mode != "smoke":
            gpu = rec["data"].get("device", {}).get("gpu", gpu)
            path = suite_path(args.out, gpu)
        save()
    if mode != "smoke":  # tiny CPU sizes say nothing about the targets
        suite["targets_met"] = targets_met(suite["steps"])
    save()
    log(f"\nsaved {path}\n")
    for line in table(suite, gpu).splitlines():
        log(line)
    return 0


def _git_head() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


if __name__ == "__main__":
    sys.exit(main())
