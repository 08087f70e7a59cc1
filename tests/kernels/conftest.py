"""Kernel tests run under the Triton interpreter on the CPU when there is no
CUDA device; with one, they run the compiled kernels on it."""

import os
import pathlib
import sys

import torch

# Must happen before triton is imported: @triton.jit reads it at decoration.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import vlserve_kernels  # noqa: F401
except ImportError:  # the repository is not pip-installed: use its source tree
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "kernels"))

import pytest  # noqa: E402


def pytest_report_header(config):
    mode = "compiled on CUDA" if os.environ.get("TRITON_INTERPRET") != "1" else "TRITON_INTERPRET=1 (CPU)"
    return f"vlserve_kernels: {mode}"


@pytest.fixture
def device() -> torch.device:
    """Where kernel inputs live: the CPU under the interpreter, else CUDA."""
    return torch.device("cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda")


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
