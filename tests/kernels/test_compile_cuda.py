"""The kernels compile for real NVIDIA targets (sm_80, sm_90), checked without
a GPU: the interpreter does not type-check kernels the way the compiler does
(e.g. an int argument equal to 1 becomes a constexpr when compiled).
See compile_check.py; it runs in a subprocess without TRITON_INTERPRET."""

import os
import pathlib
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")

HERE = pathlib.Path(__file__).resolve().parent
KERNELS_SRC = HERE.parents[1] / "kernels"


def _has_ptxas() -> bool:
    return any((pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin").glob("ptxas*"))


pytestmark = pytest.mark.skipif(not _has_ptxas(), reason="Triton's NVIDIA backend (ptxas) is absent")


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("kernel", ["attention", "decode"])
def test_kernels_compile_for_cuda(kernel, arch, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(KERNELS_SRC), env.get("PYTHONPATH")]))
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile for real, not from a cache
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silences a Triton 3.9 notice
    proc = subprocess.run([sys.executable, str(HERE / "compile_check.py"), kernel, str(arch)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
