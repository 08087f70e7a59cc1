"""A pytest plugin for step kernel_tests (copied to a temp dir as gpu_suite_pytest_plugin, loaded
with -p, so xdist workers load it too): each test's outcome and the dtypes it runs in, saved
after every test to $GPU_SUITE_PYTEST_JSON (partial results survive)."""

import json
import os
import re

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
