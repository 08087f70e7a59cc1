"""Shared helpers for the kernel tests: inputs, masks, tolerances."""

import os

import torch

# conftest.py has set TRITON_INTERPRET (when there is no CUDA device) by now.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

# Tolerances vs the float64 reference computed from the same (rounded)
# inputs, so they only cover fp32 accumulation and output rounding.
TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),  # fp16 ulp is 2^-10 relative
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),  # bf16 ulp is 2^-7 relative
}


def randn(shape, dtype, device, gen):
    return torch.randn(*shape, generator=gen, dtype=torch.float32).to(dtype=dtype, device=device)


def padding_mask(lengths, max_len, device):
    """Bool (N, max_len): True at positions >= lengths[n] (right padding)."""
    lengths = torch.as_tensor(lengths)
    return (torch.arange(max_len)[None, :] >= lengths[:, None]).to(device)


def random_mask(n, length, gen, device, p=0.3):
    """Bool (n, length) with scattered True (padding) entries."""
    return (torch.rand(n, length, generator=gen) < p).to(device)


def assert_close(out, ref, dtype):
    assert not torch.isnan(out).any(), "NaN in output"
    torch.testing.assert_close(out.double().cpu(), ref.double().cpu(), **TOL[dtype])


def nan_guarded(t: torch.Tensor, pad: int = 4096) -> torch.Tensor:
    """A copy of `t` living inside a NaN-filled buffer: an unmasked read past
    either end of the tensor pulls NaN into the result."""
    fill = float("nan") if t.is_floating_point() else 1
    buf = torch.full((t.numel() + 2 * pad,), fill, dtype=t.dtype, device=t.device)
    out = buf[pad:pad + t.numel()].view(t.shape)
    out.copy_(t)
    return out
