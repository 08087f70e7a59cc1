"""Shared helpers for the kernel wrappers: Triton detection, input checks,
block-size choice and the once-per-head-dim fallback warning.

Imports torch only; Triton is imported lazily so that CPU-only installs can
import the package.
"""

from __future__ import annotations

import functools
import logging

import torch

logger = logging.getLogger("vlserve_kernels")

# Head dims the Triton kernels are compiled for (tl.arange needs a power of
# two and tl.dot needs K >= 16); anything else takes the torch fallback.
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_warned: set[tuple[str, int]] = set()


@functools.cache
def triton_available() -> bool:
    """True when the `triton` package can be imported."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def warn_fallback_once(kernel: str, head_dim: int) -> None:
    """Log (once per kernel and head dim) that the torch fallback runs."""
    key = (kernel, head_dim)
    if key in _warned:
        return
    _warned.add(key)
    logger.warning(
        "%s: head dim %d has no Triton kernel (supported: %s); using the torch fallback",
        kernel, head_dim, ", ".join(map(str, SUPPORTED_HEAD_DIMS)),
    )


def is_interpreted(jit_fn) -> bool:
    """True when `jit_fn` was decorated under TRITON_INTERPRET=1."""
    return type(jit_fn).__name__ == "InterpretedFunction"


def check_runnable(jit_fn, device: torch.device, name: str) -> None:
    """Raise unless `jit_fn` can run on tensors of `device`."""
    interpreted = is_interpreted(jit_fn)
    if interpreted and device.type != "cpu":
        raise ValueError(f"{name}: the Triton interpreter is active (TRITON_INTERPRET=1) "
                         f"but the tensors are on {device}; move them to the CPU")
    if not interpreted and device.type != "cuda":
        raise ValueError(f"{name}: tensors are on {device}; the Triton kernels run on CUDA "
                         f"devices, or on the CPU under TRITON_INTERPRET=1")


def require(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ValueError(f"{name}: {message}")


def check_qkv_dtypes(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for label, t in (("q", q), ("k", k), ("v", v)):
        require(isinstance(t, torch.Tensor), name, f"{label} must be a torch.Tensor")
    require(q.dtype in FLOAT_DTYPES, name,
            f"q has dtype {q.dtype}; expected one of float16, bfloat16, float32")
    require(k.dtype == q.dtype and v.dtype == q.dtype, name,
            f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    require(k.device == q.device and v.device == q.device, name,
            f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")


def check_mask(name: str, mask: torch.Tensor | None, shape: tuple[int, ...], device,
               label: str = "key_padding_mask") -> None:
    if mask is None:
        return
    require(isinstance(mask, torch.Tensor) and mask.dtype == torch.bool, name,
            f"{label} must be a bool tensor (True = padding)")
    require(tuple(mask.shape) == shape, name,
            f"{label} has shape {tuple(mask.shape)}; expected {shape}")
    require(mask.device == device, name, f"{label} is on {mask.device}, q on {device}")


def check_index(name: str, label: str, t: torch.Tensor | None, length: int, device) -> None:
    if t is None:
        return
    require(isinstance(t, torch.Tensor) and not t.is_floating_point() and not t.is_complex()
            and t.dtype != torch.bool, name, f"{label} must be an integer tensor")
    require(tuple(t.shape) == (length,), name,
            f"{label} has shape {tuple(t.shape)}; expected ({length},)")
    require(t.device == device, name, f"{label} is on {t.device}, q on {device}")


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@functools.cache
def sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count
