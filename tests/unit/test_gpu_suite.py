"""bench/gpu_suite.py's plumbing, without a GPU: step selection, per-step isolation (an error,
a hang past its budget, a hard crash), the JSON and the table, and that the e2e steps' import
path needs no server package (the GPU machine has no fastapi)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_suite.py"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # standard library only at import (gpu_steps, too)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def gpu_steps(suite):
    """bench/gpu_steps, as the driver imported it."""
    return sys.modules["gpu_steps"]


def test_step_selection(suite):
    every = suite.select_steps(None)
    assert every[0] == "env" and "kernel_tests" in every and not any(n.startswith("selftest") for n in every)
    assert suite.select_steps("kernels,e2e") == every  # the two groups are every visible step
    assert suite.select_steps("coca,kernel_bench") == ["env", "kernel_bench", "e2e_coca"]  # run order kept
    assert suite.select_steps("blip", skip="env,e2e_blip_large") == ["e2e_blip_base"]
    with pytest.raises(SystemExit, match="unknown step"):
        suite.select_steps("nope")


def test_failing_hanging_and_crashing_steps_are_recorded(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--only", "selftest", "--skip", "env", "--out", str(tmp_path),
                           "--budget", "selftest_hang=1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "gpu_suite-unknown.json").read_text())
    steps = data["steps"]
    assert list(steps) == ["selftest_ok", "selftest_fail", "selftest_hang", "selftest_crash"]
    assert steps["selftest_ok"]["status"] == "ok" and steps["selftest_ok"]["data"] == {"answer": 42}
    assert steps["selftest_fail"]["status"] == "error" and "planted failure" in steps["selftest_fail"]["error"]
    assert steps["selftest_fail"]["data"] == {"before": "kept"}  # what the step saved before failing
    hang = steps["selftest_hang"]
    assert hang["status"] == "timeout" and hang["data"] == {"partial": 1} and hang["wall_s"] < 10
    assert steps["selftest_crash"]["status"] == "crashed" and steps["selftest_crash"]["data"] == {"partial": 2}
    assert (tmp_path / "gpu_suite.log").is_file()
    last = proc.stdout.rstrip().splitlines()
    assert last[-1].startswith("selftest_crash") and "crashed" in last[-1]  # the table is printed last


def test_e2e_import_path_needs_no_server_package():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import gpu_suite; from gpu_steps import child as g; "
            "g.block_server_packages(); "
            "mods = g.import_e2e_path(); assert not g.server_packages_imported(), g.server_packages_imported(); "
            "import importlib.util as u; assert u.find_spec('fastapi') is None; print(','.join(mods))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "bench")], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mods = set(proc.stdout.strip().split(","))
    assert {"torch", "pydantic", "pydantic_settings"} <= mods  # what the device must be given as wheels
    assert not mods & {"fastapi", "uvicorn", "starlette", "transformers"}


def test_targets_and_table(suite, gpu_steps):
    def rec(ms, batch):
        return {"batch": batch, "median_s": ms / 1e3, "p50_ms": ms, "images_per_s": batch / (ms / 1e3)}
    meas = {"vlserve/b64/beams1": rec(25.0, 64), "transformers/b64/beams1": rec(150.0, 64),
            "vlserve/b1/beams1": rec(12.0, 1), "transformers/b1/beams1": rec(30.0, 1)}
    steps = {"e2e_blip_base": {"status": "ok", "wall_s": 1.0, "budget_s": 80,
                               "data": {"reference": {"name": "transformers", "dtype": "torch.float16"},
                                        "measurements": meas,
                                        "summary": gpu_steps.timing.e2e_summary(meas, "vlserve", "transformers", 64)}},
             "e2e_coca": {"status": "error", "wall_s": 2.0, "budget_s": 45, "error": "RuntimeError: boom\ntrace"}}
    met = suite.targets_met(steps)
    assert met["blip_base >= 2000 images/s (greedy)"] == {"value": 2560.0, "met": True}
    assert met["blip_base p50 <= 20 ms (batch 1, greedy)"]["met"] is True
    assert met["blip_base >= 4x transformers fp16 (b64, greedy)"]["value"] == pytest.approx(6.0)
    assert met["blip_large >= 700 images/s (greedy)"]["met"] is None  # not measured
    text = suite.table({"suite": {"mode": "full", "wall_s": 3}, "steps": steps, "targets_met": met}, "NVIDIA H200")
    assert "6.00x" in text and "RuntimeError: boom" in text and "MET   blip_base >= 2000" in text
    assert "blip_large" not in text


def test_pytest_outcomes_by_dtype(gpu_steps):
    tests = {"a[f16]": {"outcome": "passed", "dtypes": "float16", "duration_s": 1.0},
             "b": {"outcome": "failed", "dtypes": "bfloat16,float16", "duration_s": 2.0, "message": "mismatch"},
             "c": {"outcome": "skipped", "dtypes": "unspecified", "duration_s": 0.0}}
    s = gpu_steps.kernel_tests.summarize_tests(tests)
    assert s["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert s["by_dtype"]["float16"] == {"passed": 1, "failed": 1} and s["by_dtype"]["bfloat16"] == {"failed": 1}
    assert s["failures"] == [{"test": "b", "outcome": "failed", "message": "mismatch"}]
