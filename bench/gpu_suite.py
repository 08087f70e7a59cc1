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

Only the standard library is imported at the top: the parent process never touches CUDA.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
REQUIREMENTS = BENCH / "gpu_suite_requirements.txt"
WHEELS = ROOT / ".whl"
# On the device these are absent; a step that needs one would fail there, so it fails here too.
SERVER_ONLY = ("fastapi", "uvicorn", "starlette", "fastapi_offline", "multipart", "python_multipart")
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


# ---- steps -------------------------------------------------------------------

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


STEPS: dict[str, Step] = {}
GROUPS = {"kernels": ("kernel_tests", "kernel_bench"), "e2e": ("e2e_blip_base", "e2e_blip_large", "e2e_coca",
                                                              "e2e_beit3"),
          "blip": ("e2e_blip_base", "e2e_blip_large"),
          "selftest": ("selftest_ok", "selftest_fail", "selftest_hang", "selftest_crash")}


def step(name, budget_s, quick_s, smoke_s, **kw):
    def register(fn):
        STEPS[name] = Step(name, fn, budget_s, quick_s, smoke_s, **kw)
        return fn
    return register


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


# ---- child side --------------------------------------------------------------

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


def block_server_packages() -> None:
    """As if fastapi & co. were not installed: `import` raises, importlib.util.find_spec says None."""
    for name in SERVER_ONLY:
        if name not in sys.modules:
            sys.modules[name] = None


def server_packages_imported() -> list[str]:
    return sorted(n for n, m in sys.modules.items() if m is not None and n.partition(".")[0] in SERVER_ONLY)


def add_paths() -> None:
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]  # the script's own folder
    for p in reversed(PATHS):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))


def import_e2e_path() -> list[str]:
    """Import everything the e2e steps take from vlserve and tests/helpers (the references are
    imported lazily by their steps); returns the third-party top-level modules now loaded."""
    add_paths()
    import importlib

    for name in ("vlserve.engine.family", "vlserve.engine.generation.params", "vlserve.scheduling.runner",
                 "vlserve.tasks.caption", "vlserve.tasks.models", "vlserve.families.blip.engine",
                 "vlserve.families.blip.config", "vlserve.families.blip.model", "vlserve.families.coca.engine",
                 "vlserve.families.coca.config", "vlserve.families.beit3.engine", "vlserve.families.beit3.config",
                 "tests.helpers.tiny_coca", "tests.helpers.tiny_beit3"):
        importlib.import_module(name)
    load_bench("common")
    return third_party_loaded()


def third_party_loaded() -> list[str]:
    """Top-level modules loaded now that are neither the standard library nor this repository's."""
    # kernels: the repository's kernels/ folder as a namespace package, which transformers probes
    local = {"vlserve", "vlserve_kernels", "kernels", "tests", "common", "gpu_suite", "bench_kernels",
             "beit3_vs_unilm", "__main__"}
    tops = {n.partition(".")[0] for n, m in sys.modules.items() if m is not None}
    return sorted(t for t in tops - set(sys.stdlib_module_names) - local if not t.startswith("_"))


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


def child_main(args) -> int:
    st = STEPS[args.child]
    cfg = dict(MODES[args.mode])
    if args.batches:
        cfg["batches"] = tuple(int(b) for b in args.batches.split(","))
    if args.tokens:
        cfg["tokens"] = args.tokens
    ctx = Ctx(st.name, args.mode, Path(args.child_json), float(args.child_deadline), Path(args.out), cfg)
    add_paths()
    if st.name != "kernel_tests":
        block_server_packages()
    ctx.write("running")
    try:
        st.fn(ctx)
        if st.name.startswith(("env", "e2e")):
            leaked = server_packages_imported()
            ctx.data["server_packages_imported"] = leaked
            ctx.data["third_party_modules"] = third_party_loaded()
            if leaked:
                raise RuntimeError(f"the engine path imported {leaked}: the GPU machine has none of them")
    except BaseException as e:  # noqa: BLE001 - every failure is a result
        tb = traceback.format_exc(limit=12)
        print(tb, file=sys.stderr, flush=True)
        ctx.write("error", f"{type(e).__name__}: {e}"[:2000] + "\n" + tb[-3000:])
        return 1
    ctx.write("ok")
    return 0


def sync_fn(device: str):
    import torch

    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-") or "unknown"


# ---- step: env ---------------------------------------------------------------

DISTS = ("torch", "triton", "transformers", "onnxruntime", "numpy", "pydantic", "pydantic-core",
         "pydantic-settings", "typing-extensions", "annotated-types", "typing-inspection", "python-dotenv",
         "tokenizers", "safetensors", "sentencepiece", "pillow", "prometheus-client", "pytest", "pytest-xdist",
         "open_clip_torch", "torchscale", "beit3-gml", "timm", "fastapi", "uvicorn")


@step("env", 60, 45, 60)
def step_env(ctx: Ctx) -> None:
    import importlib.metadata as md

    versions = {}
    for dist in DISTS:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    ctx.put("versions", versions)
    ctx.put("python", sys.version.split()[0])
    ctx.put("TRITON_INTERPRET", os.environ.get("TRITON_INTERPRET"))
    import torch

    info = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), capability=f"{p.major}.{p.minor}",
                    sm_count=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    else:
        info["gpu"] = "cpu-smoke" if ctx.smoke else "no-cuda"
    ctx.put("device", info)
    try:  # read-only query; the card's settings are left alone
        q = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu,memory.used"
        smi = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv"], capture_output=True, text=True,
                             timeout=15)
        ctx.put("nvidia_smi", smi.stdout.strip() or smi.stderr.strip())
    except (OSError, subprocess.TimeoutExpired) as e:
        ctx.put("nvidia_smi", f"unavailable: {e}")
    found = {}
    import importlib.util

    for mod in ("pydantic", "pydantic_settings", "open_clip", "beit3", "torchscale", "xdist", "onnxruntime"):
        spec = importlib.util.find_spec(mod)
        found[mod] = spec.origin if spec else None
    ctx.put("importable", found)
    try:
        ctx.put("engine_path_third_party", import_e2e_path())
        ctx.put("engine_path", "ok")
    except Exception as e:  # recorded; the e2e steps will fail with the same error
        ctx.put("engine_path", f"{type(e).__name__}: {e}")


# ---- step: kernel tests --------------------------------------------------------

# A pytest plugin (written to a temp dir, loaded with -p, so xdist workers load it too): each
# test's outcome and the dtypes it runs in, saved after every test (partial results survive).
PYTEST_PLUGIN = r'''
import json, os, re

_DTYPES = ("bfloat16", "float16", "float32", "float64")
_OUT = os.environ.get("GPU_SUITE_PYTEST_JSON")
_TESTS = {}
_META = {}
_WORKER = False


def pytest_configure(config):
    global _WORKER
    _WORKER = hasattr(config, "workerinput")  # xdist workers: the controller writes
    import torch  # what conftest.py decides from: the interpreter without CUDA, else compiled

    _META.update(TRITON_INTERPRET=os.environ.get("TRITON_INTERPRET"), cuda=torch.cuda.is_available(),
                 gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                 workers=getattr(config.option, "numprocesses", None))


def _dtypes_of(item):
    found = set()
    spec = getattr(item, "callspec", None)
    for value in (spec.params.values() if spec else ()):
        text = str(value)
        if text.startswith("torch.") and text[6:] in _DTYPES:
            found.add(text[6:])
    for d in _DTYPES:
        if re.search(r"(?<![a-z])" + d, item.name):  # test_float16, not the float16 in bfloat16
            found.add(d)
    return ",".join(sorted(found)) or "unspecified"


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        item.user_properties.append(("dtypes", _dtypes_of(item)))


def pytest_runtest_logreport(report):
    if _WORKER:
        return
    t = _TESTS.setdefault(report.nodeid, {"outcome": "passed", "dtypes": "unspecified", "duration_s": 0.0})
    t["dtypes"] = dict(report.user_properties).get("dtypes", t["dtypes"])
    t["duration_s"] = round(t["duration_s"] + report.duration, 3)
    if report.failed:
        t["outcome"] = "failed" if report.when == "call" else "error"
        crash = getattr(report.longrepr, "reprcrash", None)
        t["message"] = (crash.message if crash is not None else str(report.longrepr))[:400]
    elif report.skipped and t["outcome"] == "passed":
        t["outcome"] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        if isinstance(report.longrepr, tuple):
            t["message"] = str(report.longrepr[2])[:200]
    if report.when == "teardown" and _OUT:
        with open(_OUT + ".tmp", "w") as f:
            json.dump({"meta": _META, "tests": _TESTS}, f)
        os.replace(_OUT + ".tmp", _OUT)
'''

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
    (tmp / "gpu_suite_pytest_plugin.py").write_text(PYTEST_PLUGIN)
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
    reader = threading.Thread(target=_pump, args=(proc.stdout, tail, ""), daemon=True)
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


def _pump(stream, tail, prefix):
    for line in stream:
        line = line.rstrip("\n")
        tail.append(line)
        print(prefix + line, flush=True)


# ---- step: kernel benchmark ---------------------------------------------------

def kernel_targets(records: list[dict]) -> dict:
    """Issue 19's kernel targets from bench/kernels.py's records."""
    out = {}
    for r in records:
        ours = r["ms"].get("triton")
        sdpa = {k: t for k, t in r["ms"].items() if k.startswith("sdpa") and isinstance(t, float)}
        if not isinstance(ours, float) or not sdpa:
            continue
        best = min(sdpa, key=sdpa.get)
        row = {"triton_ms": ours, "best_sdpa": best, "best_sdpa_ms": sdpa[best], "x_best_sdpa": sdpa[best] / ours}
        if "pct_copy_bw" in r:
            row["pct_copy_bw"] = r["pct_copy_bw"].get("triton")
        else:
            row["tflops"] = r["tflops"].get("triton")
        if r["case"].startswith("vit_"):
            row["target"] = f"x_best_sdpa >= {TARGETS['prefill_x_best_sdpa']}"
            row["met"] = row["x_best_sdpa"] >= TARGETS["prefill_x_best_sdpa"]
        elif r["case"].startswith("decode_cross"):
            row["target"] = f"x_best_sdpa >= {TARGETS['decode_cross_x_sdpa']}, " \
                            f"pct_copy_bw >= {TARGETS['decode_cross_pct_copy_bw']}"
            row["met"] = (row["x_best_sdpa"] >= TARGETS["decode_cross_x_sdpa"]
                          and (row["pct_copy_bw"] or 0) >= TARGETS["decode_cross_pct_copy_bw"])
        out[f"{r['case']}/{r['dtype']}"] = row
    return out


@step("kernel_bench", 100, 60, 60, kernels=True)
def step_kernel_bench(ctx: Ctx) -> None:
    import torch

    if not ctx.smoke and not torch.cuda.is_available():
        raise RuntimeError("bench/kernels.py needs a CUDA device")
    kb = load_bench("kernels", "bench_kernels")
    # Its --dry-run: CPU, interpreter, tiny shapes, fp16 (bf16 dot is wrong under the interpreter).
    dtypes = "float16" if ctx.smoke else ("bfloat16" if ctx.mode == "quick" else "float16,bfloat16")
    args = argparse.Namespace(dry_run=ctx.smoke, dtypes=dtypes)
    cases = [c for c in kb.CASES if not (ctx.smoke and c.kind in kb.CUDA_ONLY)]
    payload, records, skipped, failed = None, [], [], {}
    name = "cpu-interpreter"
    # One case per run(): results saved case by case, and the budget checked between cases.
    for case in cases:
        if ctx.left() < RESERVE_S + 5:
            skipped.append(case.name)
            continue
        kb.CASES = [case]
        try:
            part = kb.run(args)
        except Exception as e:  # noqa: BLE001 - the other cases still run
            failed[case.name] = f"{type(e).__name__}: {str(e)[:300]}"
            ctx.put("cases_failed", failed)
            print(f"{case.name}: {failed[case.name]}", flush=True)
            continue
        records += part["results"]
        if payload is None:
            payload = part
            name = slug(part["machine"]["gpu"])
        payload["results"] = records
        (ctx.out_dir / f"kernels-{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
        ctx.put("targets", kernel_targets(records))
        ctx.put("copy_bandwidth_gbs", payload["copy_bandwidth_gbs"])
    print(kb.summary_table(records), flush=True)
    ctx.put("dtypes", dtypes)
    ctx.put("cases_run", len(records))
    ctx.put("cases_skipped_for_budget", skipped)
    ctx.put("file", f"kernels-{name}.json")


# ---- e2e: shared timing -------------------------------------------------------

class Matrix:
    """Times every implementation at every (beams, batch), most informative first: batch 64
    greedy, batch 1 greedy, then 3 beams; each measurement saved as it is taken."""

    def __init__(self, ctx: Ctx, impls: dict, sync):
        self.ctx, self.impls, self.sync = ctx, impls, sync  # impls: name -> make(batch, beams) -> fn
        self.results: dict = {}
        ctx.put("measurements", self.results)

    def plan(self) -> list[tuple[int, int, str]]:
        batches = sorted(self.ctx.cfg["batches"], reverse=True)
        return [(beams, b, name) for beams in (1, 3) for b in batches for name in self.impls]

    def run(self, extra: list[tuple[int, int, str]] = ()) -> dict:
        plan = self.plan() + list(extra)
        for i, (beams, batch, name) in enumerate(plan):
            key = f"{name}/b{batch}/beams{beams}"
            self.results[key] = self.measure(name, batch, beams, remaining=len(plan) - i)
            self.ctx.put("measurements", self.results)
        return self.results

    def timed(self, fn) -> float:
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def measure(self, name: str, batch: int, beams: int, remaining: int) -> dict:
        ctx, cfg = self.ctx, self.ctx.cfg
        if ctx.left() < RESERVE_S:
            return {"skipped": "step budget spent"}
        rec: dict = {"batch": batch, "beams": beams}
        try:
            fn, check = self.impls[name](batch, beams)
            rec["first_call_s"] = self.timed(fn)  # Triton JIT, cuDNN/cuBLAS heuristics, allocator
            t = rec["first_call_s"]
            for _ in range(cfg["warmup"] - 1):
                t = self.timed(fn)
            if check is not None:
                rec["new_tokens"] = check()  # both sides must do the same work
            share = (ctx.left() - RESERVE_S) / max(1, remaining)
            wanted = cfg["lat_runs"] if batch == 1 else cfg["reps"]
            n = max(1, min(wanted, int(share / max(t, 1e-4))))
            runs = [self.timed(fn) for _ in range(n)]
        except Exception as e:  # noqa: BLE001 - one failing measurement does not end the step
            rec["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            print(f"{name} b{batch} beams{beams}: {rec['error']}", flush=True)
            _free_cuda()
            return rec
        runs.sort()
        med = runs[len(runs) // 2] if len(runs) % 2 else sum(runs[len(runs) // 2 - 1:len(runs) // 2 + 1]) / 2
        rec.update(runs_s=[round(r, 6) for r in runs], median_s=med, p50_ms=med * 1e3,
                   p90_ms=runs[min(len(runs) - 1, int(0.9 * len(runs)))] * 1e3, images_per_s=batch / med)
        print(f"{name:<14} b{batch:<4} beams{beams}  {med * 1e3:9.2f} ms  {batch / med:9.1f} images/s  "
              f"({len(runs)} runs)", flush=True)
        return rec


def _free_cuda():
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def e2e_summary(results: dict, ours: str, ref: str | None, big: int) -> dict:
    """Headline numbers: images/s at the big batch, p50 ms at batch 1, vlserve's speed-ups."""
    def get(name, batch, beams, field):
        r = results.get(f"{name}/b{batch}/beams{beams}", {})
        return r.get(field)
    out: dict = {"big_batch": big}
    for name in filter(None, (ours, ref)):
        out[name] = {f"b{big}_greedy_images_per_s": get(name, big, 1, "images_per_s"),
                     f"b{big}_beams3_images_per_s": get(name, big, 3, "images_per_s"),
                     "b1_greedy_p50_ms": get(name, 1, 1, "p50_ms"), "b1_beams3_p50_ms": get(name, 1, 3, "p50_ms")}
    if ref:
        sp = {}
        for batch in (big, 1):
            for beams in (1, 3):
                a, b = get(ours, batch, beams, "median_s"), get(ref, batch, beams, "median_s")
                sp[f"b{batch}_{'greedy' if beams == 1 else 'beams3'}"] = b / a if a and b else None
        out["speedup"] = sp
    return out


def caption_impl(model, loop, pixels_for, tokens: int):
    """vlserve's caption task (the Python API's path: DirectRunner, one event loop kept open)."""
    from vlserve.engine.generation.params import GenerationParams
    from vlserve.tasks.caption import caption

    def make(batch, beams):
        params = GenerationParams(max_new_tokens=tokens, min_new_tokens=tokens, num_beams=beams)
        px = pixels_for(batch)
        last = {}

        def fn():
            last["caps"] = loop.run_until_complete(caption(model, px, params=params))
        return fn, lambda: sorted({len(c[0].tokens) for c in last["caps"]})
    return make


def new_loop():
    import asyncio

    return asyncio.new_event_loop()


def pixel_cache(size: int, device: str, dtype):
    import torch

    cache = {}

    def get(batch):
        if batch not in cache:
            g = torch.Generator().manual_seed(batch)
            cache[batch] = torch.randn(batch, 3, size, size, generator=g).to(device, dtype)
        return cache[batch]
    return get


def work_dir(name: str) -> Path:
    d = Path(tempfile.gettempdir()) / f"gpu-suite-{name}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def dtypes_for(ctx: Ctx):
    """vlserve in bf16; the references in fp16 on the GPU (as issue 19 asks), fp32 on the CPU."""
    import torch

    return torch.bfloat16, (torch.float32 if ctx.smoke else torch.float16)


# ---- e2e: BLIP ----------------------------------------------------------------

def tiny_blip_config(layers: int):
    from vlserve.families.blip.config import BlipConfig, TextConfig, VisionConfig

    vision = VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                          image_size=32, patch_size=8)
    text = TextConfig(hidden_size=64, encoder_hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4)
    return BlipConfig(vision=vision, text=text)


def run_blip(ctx: Ctx, arch: str) -> None:
    import torch

    random_blip_folder = load_bench("common").random_blip_folder
    from vlserve.engine.family import EngineOptions
    from vlserve.families.blip.engine import BlipEngine, BlipOptions
    from vlserve.families.blip.model import Components
    from vlserve.scheduling.runner import DirectRunner
    from vlserve.tasks.models import TaskModel

    ours_dtype, ref_dtype = dtypes_for(ctx)
    cfg, dev = ctx.cfg, ctx.device
    t0 = time.perf_counter()
    config = tiny_blip_config(2 if arch == "base" else 3) if ctx.smoke else None
    folder = random_blip_folder(work_dir(f"blip-{arch}-{ctx.mode}"), arch, Components(text_decoder=True),
                                config=config)
    eng = BlipEngine(folder, EngineOptions(device=dev, dtype=str(ours_dtype).removeprefix("torch.")), BlipOptions())
    ctx.put("vlserve", {"dtype": str(ours_dtype), "attention_backend": eng.backend.name,
                        "cross_attention": eng.cross_mode, "setup_s": time.perf_counter() - t0,
                        "params_m": sum(p.numel() for p in eng.model.parameters()) / 1e6})
    big = max(cfg["batches"])
    model = TaskModel("bench", DirectRunner(eng, max(big, cfg["big_batch"])), eng.capabilities)
    size = eng.model.config.vision.image_size
    loop = new_loop()
    impls = {"vlserve": caption_impl(model, loop, pixel_cache(size, dev, ours_dtype), cfg["tokens"])}
    ref = None
    try:
        import transformers

        t0 = time.perf_counter()
        hf = transformers.BlipForConditionalGeneration.from_pretrained(folder, dtype=ref_dtype).to(dev).eval()
        hf_pixels = pixel_cache(size, dev, ref_dtype)
        n = cfg["tokens"]

        def hf_make(batch, beams):
            px, last = hf_pixels(batch), {}

            @torch.inference_mode()
            def fn():
                last["out"] = hf.generate(pixel_values=px, max_new_tokens=n, min_new_tokens=n, num_beams=beams,
                                          do_sample=False)
            # BLIP's generate starts from [BOS] alone here: every new token is generated
            return fn, lambda: [int(last["out"].shape[1]) - 1]
        impls["transformers"] = hf_make
        ref = "transformers"
        ctx.put("reference", {"name": "transformers", "version": transformers.__version__, "dtype": str(ref_dtype),
                              "attn_implementation": getattr(hf.config, "_attn_implementation", None),
                              "setup_s": time.perf_counter() - t0})
    except Exception as e:  # noqa: BLE001
        ctx.put("reference", {"unavailable": f"{type(e).__name__}: {e}"[:500]})
    m = Matrix(ctx, impls, sync_fn(dev))
    extra = [(1, cfg["big_batch"], "vlserve")] if cfg["big_batch"] else []
    results = m.run(extra)
    loop.close()
    ctx.put("summary", e2e_summary(results, "vlserve", ref, big))


@step("e2e_blip_base", 80, 45, 45)
def step_blip_base(ctx: Ctx) -> None:
    run_blip(ctx, "base")


@step("e2e_blip_large", 95, 50, 45)
def step_blip_large(ctx: Ctx) -> None:
    run_blip(ctx, "large")


# ---- e2e: CoCa ------------------------------------------------------------------

@step("e2e_coca", 45, 30, 40)
def step_coca(ctx: Ctx) -> None:
    import torch

    from tests.helpers.tiny_coca import TINY, make_coca_folder
    from vlserve.engine.family import EngineOptions
    from vlserve.families.coca.config import ARCHITECTURES
    from vlserve.families.coca.engine import CocaEngine
    from vlserve.scheduling.runner import DirectRunner
    from vlserve.tasks.models import TaskModel

    ours_dtype, ref_dtype = dtypes_for(ctx)
    cfg, dev = ctx.cfg, ctx.device
    arch = "tiny" if ctx.smoke else "coca_ViT-B-32"
    model_cfg = json.loads(json.dumps(TINY if ctx.smoke else ARCHITECTURES[arch]))
    folder = work_dir(f"coca-{arch}")
    ref, why = None, None
    try:  # open_clip's generate imports transformers' BeamSearchScorer, gone in transformers 5
        import open_clip
        from open_clip.coca_model import CoCa, _has_transformers

        if not _has_transformers:
            why = "open_clip imports, but its generate cannot: transformers lacks what it needs (BeamSearchScorer)"
        else:
            from safetensors.torch import save_file

            ocfg = json.loads(json.dumps(model_cfg))
            ocfg["vision_cfg"]["output_tokens"] = ocfg["text_cfg"]["output_tokens"] = True
            torch.manual_seed(0)
            ref = CoCa(ocfg["embed_dim"], ocfg["multimodal_cfg"], ocfg["text_cfg"], ocfg["vision_cfg"]).eval()
            save_file({k: v.contiguous() for k, v in ref.state_dict().items()},
                      str(folder / "open_clip_model.safetensors"))
            (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": ocfg}))
            ref = ref.to(dev, ref_dtype)
            ctx.put("reference", {"name": "open_clip", "version": open_clip.__version__, "dtype": str(ref_dtype)})
    except ImportError as e:
        why = f"open_clip not importable ({type(e).__name__}: {e})"
    except Exception as e:  # noqa: BLE001 - a broken reference still leaves vlserve to time
        ref, why = None, f"open_clip's model could not be built: {type(e).__name__}: {e}"[:500]
    if ref is None:
        ctx.put("reference", {"unavailable": why})
        make_coca_folder(folder, cfg=model_cfg)  # vlserve's own modules, open_clip's layout
    eng = CocaEngine(folder, EngineOptions(device=dev, dtype=str(ours_dtype).removeprefix("torch.")))
    ctx.put("vlserve", {"arch": arch, "dtype": str(ours_dtype), "attention_backend": eng.backend.name,
                        "params_m": sum(p.numel() for p in eng.model.parameters()) / 1e6})
    big = max(cfg["batches"])
    model = TaskModel("bench", DirectRunner(eng, big), eng.capabilities)
    loop = new_loop()
    size = eng.processor.size
    impls = {"vlserve": caption_impl(model, loop, pixel_cache(size, dev, ours_dtype), cfg["tokens"])}
    if ref is not None:
        ref_px, n = pixel_cache(size, dev, ref_dtype), cfg["tokens"]

        def oc_make(batch, beams):
            px, last = ref_px(batch), {}
            # as bench/coca.py: seq_len counts <start_of_text>; n decoder steps for both
            kind = dict(generation_type="beam_search", num_beams=beams, num_beam_groups=1) if beams > 1 else \
                dict(generation_type="top_k", top_k=1)

            @torch.inference_mode()
            def fn():
                last["out"] = ref.generate(px, seq_len=n + 1, min_seq_len=n, **kind)
            return fn, lambda: [int(last["out"].shape[1]) - 1]
        impls["open_clip"] = oc_make
    results = Matrix(ctx, impls, sync_fn(dev)).run()
    loop.close()
    ctx.put("summary", e2e_summary(results, "vlserve", "open_clip" if ref is not None else None, big))


# ---- e2e: BEiT-3 ------------------------------------------------------------------

@step("e2e_beit3", 60, 35, 45)
def step_beit3(ctx: Ctx) -> None:
    import dataclasses

    import torch

    from tests.helpers.tiny_beit3 import TINY, make_beit3_folder, train_spm
    from vlserve.engine.family import EngineOptions
    from vlserve.families.beit3.config import Beit3Config
    from vlserve.families.beit3.engine import Beit3Engine, Beit3Options
    from vlserve.scheduling.runner import DirectRunner
    from vlserve.tasks.models import TaskModel

    ours_dtype, ref_dtype = dtypes_for(ctx)
    cfg, dev = ctx.cfg, ctx.device
    root = Path(tempfile.mkdtemp(prefix="gpu-suite-beit3-"))
    spm = train_spm(root / "beit3.spm")
    ref, why, unilm = None, None, None
    try:  # unilm's classes (beit3-gml on torchscale): bench/beit3_vs_unilm.py builds them
        import beit3  # noqa: F401

        load_bench("common")
        unilm = load_bench("beit3_vs_unilm")
    except ImportError as e:
        why = f"unilm's beit3 not importable ({type(e).__name__}: {e})"
    if unilm is not None:
        try:  # unilm's registered model: BEiT-3-base captioning at 480 px, also in the smoke run
            folder, ref = unilm.folder_for("caption", root, spm)
            ref = ref.to(dev, ref_dtype)
            heads = None
            ctx.put("reference", {"name": "unilm beit3 CaptioningHandler", "dtype": str(ref_dtype)})
        except Exception as e:  # noqa: BLE001 - a broken reference still leaves vlserve to time
            ref, why = None, f"unilm's model could not be built: {type(e).__name__}: {e}"[:500]
    if ref is None:
        ctx.put("reference", {"unavailable": why})
        if ctx.smoke:
            bcfg = dataclasses.replace(TINY, retrieval=False, answers=0, caption=True, vocab_size=64010)
        else:  # unilm's beit3_base_patch16_480_captioning
            bcfg = Beit3Config(image_size=480, caption=True, vocab_size=64010)
        folder = make_beit3_folder(root / "caption", cfg=bcfg, spm=spm)
        heads = bcfg.heads
    eng = Beit3Engine(folder, EngineOptions(device=dev, dtype=str(ours_dtype).removeprefix("torch.")),
                      Beit3Options(heads=heads))
    ctx.put("vlserve", {"dtype": str(ours_dtype), "attention_backend": eng.backend.name,
                        "image_size": eng.model.config.image_size,
                        "params_m": sum(p.numel() for p in eng.model.parameters()) / 1e6})
    big = max(cfg["batches"])
    model = TaskModel("bench", DirectRunner(eng, big), eng.capabilities)
    loop = new_loop()
    size = eng.model.config.image_size
    impls = {"vlserve": caption_impl(model, loop, pixel_cache(size, dev, ours_dtype), cfg["tokens"])}
    if ref is not None:
        ref_px, n = pixel_cache(size, dev, ref_dtype), cfg["tokens"]

        def un_make(batch, beams):
            px = ref_px(batch)
            handler = unilm.unilm_captioner(ref, eng.tokenizer.mask_id, beams, n)
            ids = torch.arange(batch)

            @torch.inference_mode()
            def fn():
                handler.predictions.clear()
                handler.eval_batch(ref, px, image_id=ids)
            return fn, lambda: sorted({int(p["caption"]) for p in handler.predictions})
        impls["unilm"] = un_make
    results = Matrix(ctx, impls, sync_fn(dev)).run()
    loop.close()
    ctx.put("summary", e2e_summary(results, "vlserve", "unilm" if ref is not None else None, big))


# ---- fake steps for tests/unit/test_gpu_suite.py ----------------------------------

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


# ---- parent side ------------------------------------------------------------------

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
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", st.name, "--mode", mode,
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
    reader = threading.Thread(target=_pump_log, args=(proc.stdout, tail, f"[{st.name}] ", log), daemon=True)
    reader.start()
    killed = False
    try:
        proc.wait(timeout=budget + 3)  # the child stops itself first; this is the backstop
    except subprocess.TimeoutExpired:
        killed = True
        _kill_group(proc)
    reader.join(timeout=5)
    CURRENT.pop("proc", None)
    wall = time.time() - t0
    rec = {"status": None, "wall_s": round(wall, 2), "budget_s": round(budget, 1), "returncode": proc.returncode}
    try:
        child = json.loads(child_json.read_text())
    except (OSError, ValueError):
        child = {"status": None, "error": None, "data": {}}
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


def _pump_log(stream, tail, prefix, log):
    for line in stream:
        line = line.rstrip("\n")
        tail.append(line)
        log(prefix + line)


def _kill_group(proc):
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


def read_requirements() -> list[tuple[str, str]]:
    reqs = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            reqs.append((name.strip(), version.strip()))
    return reqs


def ensure_wheels(force: bool, log: Log, env: dict) -> dict:
    """pydantic & co. from .whl/ into a temp folder when this Python lacks them (the device)."""
    import importlib.util

    missing = [m for m in ("pydantic", "pydantic_settings") if importlib.util.find_spec(m) is None]
    if not missing and not force:
        return {"needed": False}
    files, absent = [], []
    for name, version in read_requirements():
        found = sorted(WHEELS.glob(f"{re.sub(r'[-_.]+', '_', name)}-{version}-*.whl"))
        (files.append(found[-1]) if found else absent.append(f"{name}=={version}"))
    info = {"needed": True, "missing_modules": missing, "wheels": [f.name for f in files], "absent_wheels": absent}
    if absent:
        log(f"WARNING: {missing} missing and no wheel for {absent} in {WHEELS}: the e2e steps will fail "
            f"(run `python3 bench/gpu_suite.py --fetch-wheels` where pip has a network, then carry .whl)")
    if not files:
        return info
    target = Path(tempfile.gettempdir()) / "gpu_suite_site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, files)],
                          capture_output=True, text=True, timeout=120)
    info["pip_rc"] = proc.returncode
    if proc.returncode:
        info["pip_error"] = proc.stderr[-1500:]
        log(f"WARNING: installing the wheels failed: {proc.stderr[-500:]}")
    else:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
        info["target"] = str(target)
        log(f"installed {len(files)} wheels into {target}")
    return info


def fetch_wheels() -> int:
    """Download the requirements' wheels for the device's Python (3.12, x86-64) into .whl/."""
    WHEELS.mkdir(exist_ok=True)
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                             "manylinux2014_x86_64") for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *platforms, "-d", str(WHEELS), *(f"{n}=={v}" for n, v in read_requirements())]
    print(" ".join(cmd))
    return subprocess.call(cmd)


def suite_path(out: Path, gpu: str) -> Path:
    return out / f"gpu_suite-{slug(gpu)}.json"


def main(argv=None) -> int:
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
    args = ap.parse_args(argv)
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
            _kill_group(CURRENT["proc"])
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


# ---- report -------------------------------------------------------------------------

def _summary(steps: dict, name: str) -> dict:
    return (steps.get(name) or {}).get("data", {}).get("summary") or {}


def targets_met(steps: dict) -> dict:
    """Issue 19's end-to-end and kernel targets, where measured (None: not measured)."""
    out = {}
    for arch, key in (("base", "blip_base_images_per_s"), ("large", "blip_large_images_per_s")):
        data = (steps.get(f"e2e_blip_{arch}") or {}).get("data", {})
        ms = data.get("measurements", {})
        best = max((r.get("images_per_s") or 0 for k, r in ms.items()
                    if k.startswith("vlserve/") and k.endswith("/beams1") and r.get("batch", 0) >= 64), default=0)
        out[f"blip_{arch} >= {TARGETS[key]} images/s (greedy)"] = \
            {"value": best or None, "met": (best >= TARGETS[key]) if best else None}
        s = _summary(steps, f"e2e_blip_{arch}")
        p50 = (s.get("vlserve") or {}).get("b1_greedy_p50_ms")
        out[f"blip_{arch} p50 <= {TARGETS['p50_ms']:.0f} ms (batch 1, greedy)"] = \
            {"value": p50, "met": (p50 <= TARGETS["p50_ms"]) if p50 else None}
        for beams in ("greedy", "beams3"):
            sp = (s.get("speedup") or {}).get(f"b64_{beams}")
            out[f"blip_{arch} >= {TARGETS['x_transformers_b64']:.0f}x transformers fp16 (b64, {beams})"] = \
                {"value": sp, "met": (sp >= TARGETS["x_transformers_b64"]) if sp else None}
    kt = (steps.get("kernel_bench") or {}).get("data", {}).get("targets", {})
    for key, row in kt.items():
        if "met" in row:
            out[f"kernel {key}: {row['target']}"] = {"value": row.get("x_best_sdpa"), "met": row["met"],
                                                    "pct_copy_bw": row.get("pct_copy_bw")}
    return out


def _f(x, fmt="{:.1f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else "-"


def table(suite: dict, gpu: str) -> str:
    steps = suite["steps"]
    lines = [f"gpu_suite on {gpu}  (mode {suite['suite']['mode']}, {suite['suite'].get('wall_s', 0):.0f} s)",
             f"{'step':<16}{'status':<9}{'wall s':>7}{'budget':>7}  result"]
    for n, rec in steps.items():
        d = rec.get("data", {})
        if rec["status"] not in ("ok",):
            res = (rec.get("error") or "").splitlines()[0][:90] if rec.get("error") else ""
        elif n == "env":
            v = d.get("versions", {})
            res = (f"{d.get('device', {}).get('gpu')}; torch {v.get('torch')}, triton {v.get('triton')}, "
                   f"transformers {v.get('transformers')}; engine imports {d.get('engine_path')}")
        elif n == "kernel_tests":
            c = d.get("counts", {})
            dt = ", ".join(f"{k} {v.get('passed', 0)}/{sum(v.values())}" for k, v in d.get("by_dtype", {}).items())
            res = (f"{c.get('passed', 0)} passed, {c.get('failed', 0)} failed, {c.get('error', 0)} errors, "
                   f"{c.get('skipped', 0)} skipped, {d.get('kernels_ran')} ({dt})")
        elif n == "kernel_bench":
            t = d.get("targets", {})
            res = f"{d.get('cases_run')} case/dtype rows, copy {_f(d.get('copy_bandwidth_gbs'), '{:.0f}')} GB/s; " + \
                  "; ".join(f"{k.split('/')[0]} {_f(r.get('x_best_sdpa'), '{:.2f}')}x"
                            for k, r in list(t.items())[:4])
        elif n.startswith("e2e"):
            ref = d.get("reference", {})
            res = f"vs {ref.get('name')} {ref.get('dtype', '')}" if "name" in ref else \
                f"reference unavailable: {str(ref.get('unavailable'))[:70]}"
        else:
            res = json.dumps(d)[:90]
        wall, budget = _f(rec.get("wall_s")), _f(rec.get("budget_s"), "{:.0f}")
        lines.append(f"{n:<16}{rec['status']:<9}{wall:>7}{budget:>7}  {res}")
    e2e = [(n, _summary(steps, n)) for n in steps if n.startswith("e2e") and _summary(steps, n)]
    if e2e:
        lines += ["", f"{'captioning':<27}{'greedy img/s':>13}{'beams3 img/s':>13}{'p50 greedy ms':>14}"
                      f"{'p50 beams3 ms':>14}   (images/s at batch b, p50 at batch 1)"]
        for n, s in e2e:
            b = s.get("big_batch")
            for impl, r in s.items():
                if not isinstance(r, dict) or impl == "speedup":
                    continue
                cells = [_f(r.get(f"b{b}_greedy_images_per_s")), _f(r.get(f"b{b}_beams3_images_per_s")),
                         _f(r.get("b1_greedy_p50_ms"), "{:.2f}"), _f(r.get("b1_beams3_p50_ms"), "{:.2f}")]
                lines.append(f"{n[4:] + ' ' + impl + f' b{b}':<27}{cells[0]:>13}{cells[1]:>13}{cells[2]:>14}"
                             f"{cells[3]:>14}")
            sp = s.get("speedup")
            if sp:  # p50 columns: the reference's latency over ours
                cells = [_f(sp.get(k), "{:.2f}x") for k in (f"b{b}_greedy", f"b{b}_beams3", "b1_greedy", "b1_beams3")]
                lines.append(f"{n[4:] + ' speed-up':<27}{cells[0]:>13}{cells[1]:>13}{cells[2]:>14}{cells[3]:>14}")
    met = suite.get("targets_met", {})
    measured = {k: v for k, v in met.items() if v["met"] is not None and not k.startswith("kernel ")}
    kernel = collections.defaultdict(list)  # one line per case, its dtypes side by side
    for k, v in met.items():
        if k.startswith("kernel ") and v["met"] is not None:
            case, _, rest = k[7:].partition("/")
            dtype, _, target = rest.partition(": ")
            bw = f", {v['pct_copy_bw']:.0f}% BW" if isinstance(v.get("pct_copy_bw"), float) else ""
            kernel[(case, target)].append((dtype, v["met"], f"{dtype} {_f(v['value'], '{:.2f}')}x{bw}"))
    if measured or kernel:
        lines += ["", "targets (issue 19):"]
        for k, v in measured.items():
            lines.append(f"  {'MET ' if v['met'] else 'miss'}  {k}: {_f(v['value'], '{:.2f}')}")
        for (case, target), rows in kernel.items():
            ok = all(m for _, m, _ in rows)
            lines.append(f"  {'MET ' if ok else 'miss'}  kernel {case} ({target}): " + "; ".join(t for *_, t in rows))
    elif suite["suite"]["mode"] == "smoke":
        lines += ["", "targets: not evaluated in the CPU smoke run"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
