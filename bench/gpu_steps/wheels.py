"""pydantic & co. for the device, which lacks them: bench/gpu_suite_requirements.txt's wheels,
fetched here into .whl/ and installed there into a temporary folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from .core import BENCH, ROOT

REQUIREMENTS = BENCH / "gpu_suite_requirements.txt"
WHEELS = ROOT / ".whl"


def read_requirements() -> list[tuple[str, str]]:
    reqs = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            reqs.append((name.strip(), version.strip()))
    return reqs


def ensure_wheels(force: bool, log: Callable[[str], None], env: dict) -> dict:
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
