"""A step's own process: the device's import conditions (the repository's paths, bench/ off
sys.path, no server package), then the step, its result written as JSON whatever happens."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from .core import BENCH, MODES, PATHS, STEPS, Ctx, load_bench

# On the device these are absent; a step that needs one would fail there, so it fails here too.
SERVER_ONLY = ("fastapi", "uvicorn", "starlette", "fastapi_offline", "multipart", "python_multipart")


def block_server_packages() -> None:
    """As if fastapi & co. were not installed: `import` raises, importlib.util.find_spec says None."""
    for name in SERVER_ONLY:
        if name not in sys.modules:
            sys.modules[name] = None


def server_packages_imported() -> list[str]:
    return sorted(n for n, m in sys.modules.items() if m is not None and n.partition(".")[0] in SERVER_ONLY)


def add_paths() -> None:
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]  # the driver's own folder
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
    local = {"vlserve", "vlserve_kernels", "kernels", "tests", "common", "gpu_suite", "gpu_steps", "bench_kernels",
             "beit3_vs_unilm", "__main__"}
    tops = {n.partition(".")[0] for n, m in sys.modules.items() if m is not None}
    return sorted(t for t in tops - set(sys.stdlib_module_names) - local if not t.startswith("_"))


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
