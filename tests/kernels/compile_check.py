"""Compile the kernels for a real NVIDIA target without a GPU (helper script).

Run by test_compile_cuda.py in a subprocess WITHOUT TRITON_INTERPRET (under
the interpreter Triton's own @jit helpers are interpreted objects that the
compiler cannot use). Each public wrapper is called on CPU tensors with a
capturing stand-in for its kernel; the captured arguments become the
signature Triton's launcher would build (ints equal to 1 are specialised to
constexprs) and are compiled to a cubin with Triton's bundled ptxas.

Usage: python compile_check.py {attention|decode} ARCH
"""

import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from vlserve_kernels import _attention, _common, _decode

_PTR = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32",
        torch.uint8: "*u8", torch.int32: "*i32", torch.int64: "*i64"}
_LAUNCH_OPTS = ("num_warps", "num_stages")

ATTENTION_CASES = [  # dtype, D, Lq, Lk, causal, masked
    (torch.float16, 64, 577, 577, False, False),
    (torch.bfloat16, 128, 32, 32, True, True),
    (torch.float32, 16, 7, 65, True, True),
    (torch.float16, 64, 1, 1, True, True),  # lengths/counts == 1: constexpr specialisation
]
DECODE_CASES = [  # dtype, D, rows, S, Lk, row_to_kv, kv_lengths, mask
    (torch.float16, 64, 6, 2, 577, True, False, True),      # split-KV + combine
    (torch.bfloat16, 128, 64, 64, 40, False, True, False),  # one chunk per row
    (torch.float32, 32, 1, 1, 1, True, True, True),         # everything == 1
]


class Capture:
    """Stands in for a @triton.jit kernel: records each launch's arguments."""

    def __init__(self, jit_fn):
        self.fn = jit_fn  # a compiled-mode JITFunction: no TRITON_INTERPRET here
        self.launches = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((args, kwargs))


def signature(fn, args, kwargs):
    sig, consts = {}, {}
    for name, value in zip(fn.arg_names, args):
        if isinstance(value, torch.Tensor):
            sig[name] = _PTR[value.dtype]
        elif isinstance(value, float):
            sig[name] = "fp32"
        elif value == 1:
            sig[name], consts[name] = "constexpr", 1
        else:
            sig[name] = "i32" if -2**31 <= value < 2**31 else "i64"
    for name, value in kwargs.items():
        if name not in _LAUNCH_OPTS:
            sig[name], consts[name] = "constexpr", value
    return sig, consts, {k: v for k, v in kwargs.items() if k in _LAUNCH_OPTS}


def compile_launches(capture, arch):
    assert capture.launches, "the wrapper launched nothing"
    for args, kwargs in capture.launches:
        sig, consts, opts = signature(capture.fn, args, kwargs)
        src = ASTSource(fn=capture.fn, signature=sig, constexprs=consts)
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=opts)
        assert compiled.asm.get("cubin"), "no cubin produced"


def use_cuda_configs():
    """Make the wrappers pick their CUDA launch configuration for CPU tensors."""
    cuda = torch.device("cuda", 0)
    real_attn, real_dec = _attention.attention_blocks, _decode.decode_blocks
    _common.check_runnable = lambda *a: None
    _common.sm_count = lambda index: 132
    _attention.attention_blocks = lambda d, dt, dev, *a: real_attn(d, dt, cuda, *a)
    _decode.decode_blocks = lambda d, dt, dev, *a: real_dec(d, dt, cuda, *a)


def check_attention(arch):
    kernel = _attention._kernel()[0]
    for dtype, d, lq, lk, causal, masked in ATTENTION_CASES:
        capture = Capture(kernel)
        _attention._kernel = lambda: (capture, 1.0)  # noqa: B023
        b, h = (1, 1) if lq == 1 else (2, 3)
        qkv = torch.zeros(b, lq, 3, h, d, dtype=dtype).permute(2, 0, 3, 1, 4)  # (3, B, H, L, D)
        kv = torch.zeros(b, h, lk, d, dtype=dtype)
        mask = torch.zeros(b, lk, dtype=torch.bool) if masked else None
        _attention.attention(qkv[0], kv, kv, key_padding_mask=mask, causal=causal)
        compile_launches(capture, arch)


def check_decode(arch):
    split, combine = _decode._kernels()[:2]
    for dtype, d, rows, num_kv, lk, shared, lens, masked in DECODE_CASES:
        cap_split, cap_combine = Capture(split), Capture(combine)
        _decode._kernels = lambda: (cap_split, cap_combine, 1.0)  # noqa: B023
        heads = 12 if rows > 1 else 1
        q = torch.zeros(rows, heads, d, dtype=dtype)
        kv = torch.zeros(num_kv, heads, lk, d, dtype=dtype)
        _decode.decode_attention(
            q, kv, kv,
            row_to_kv=torch.arange(rows) % num_kv if shared else None,
            kv_lengths=torch.full((num_kv,), lk, dtype=torch.int32) if lens else None,
            key_padding_mask=torch.zeros(num_kv, lk, dtype=torch.bool) if masked else None,
        )
        compile_launches(cap_split, arch)
        if cap_combine.launches:
            compile_launches(cap_combine, arch)


if __name__ == "__main__":
    use_cuda_configs()
    {"attention": check_attention, "decode": check_decode}[sys.argv[1]](int(sys.argv[2]))
