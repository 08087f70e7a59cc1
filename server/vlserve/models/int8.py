"""int8 linear layers for the CPU: weights in int8 with one scale per output channel,
activations quantised per row at run time (symmetric), products summed in int32 by
`torch._int_mm`, and everything around them (bias, LayerNorm, softmax) left in float32.

Why our own module: torch's eager dynamic quantisation (`torch.ao.quantization`, quantised
tensors) is deprecated, and per-row activation scales lose less than its one scale per
tensor. `_int_mm` is the int8 matmul torch keeps for torchao and its own kernels.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

QMAX = 127  # symmetric: -127..127, so negating a value never overflows


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, k) float -> (n, k) int8 and the (n, 1) float32 scale of each row."""
    scale = x.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(QMAX)
    return torch.div(x, scale).round_().clamp_(-QMAX, QMAX).to(torch.int8), scale


class Int8Linear(nn.Module):
    """A drop-in for an `nn.Linear` at inference: y = x Wᵀ + b, W stored as int8."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self._set(linear.weight, linear.bias)

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> "Int8Linear":
        """From a raw (out, in) weight: the projections some checkpoints hold as parameters."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._set(weight, bias)
        return self

    def _set(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        weight = weight.detach().float()
        self.out_features, self.in_features = weight.shape
        q, scale = quantize_rows(weight)
        self.register_buffer("weight_int8_t", q.t().contiguous())  # (in, out): _int_mm's layout
        self.register_buffer("weight_scale", scale.view(1, -1))  # (1, out)
        self.register_buffer("bias", bias.detach().float() if bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        q, scale = quantize_rows(x.reshape(-1, self.in_features).float())
        y = torch._int_mm(q, self.weight_int8_t).float()
        y.mul_(scale).mul_(self.weight_scale)  # in place: the epilogue costs as much as the matmul otherwise
        if self.bias is not None:
            y.add_(self.bias)
        return y.view(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_linears(module: nn.Module, keep: Callable[[str], bool] = lambda name: False) -> int:
    """Replace every `nn.Linear` under `module` by an Int8Linear, except those whose dotted
    name (relative to `module`) `keep` accepts; returns how many were replaced."""
    targets = [name for name, m in module.named_modules() if isinstance(m, nn.Linear) and not keep(name)]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, Int8Linear(getattr(parent, child)))
    return len(targets)
