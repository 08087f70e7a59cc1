"""Package surface: import without Triton, exports, and the references
themselves (checked against independent torch formulations)."""

import os
import pathlib
import subprocess
import sys

import torch
import torch.nn.functional as F

import vlserve_kernels
from vlserve_kernels import attention_reference, decode_attention_reference

KERNELS_SRC = pathlib.Path(__file__).resolve().parents[2] / "kernels"

NO_TRITON = """
import sys
sys.modules["triton"] = None  # any `import triton` now raises ImportError
import torch, vlserve_kernels as vk
assert not vk.triton_available()
q = torch.randn(1, 2, 3, 24)
out = vk.attention(q, q, q)  # head dim 24: the SDPA fallback needs no triton
assert out.shape == (1, 2, 3, 24)
try:
    vk.attention(torch.randn(1, 2, 3, 16), torch.randn(1, 2, 3, 16), torch.randn(1, 2, 3, 16))
except RuntimeError as e:
    assert "triton is not installed" in str(e), e
else:
    raise SystemExit("expected RuntimeError without triton")
assert "triton" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
"""


def test_import_and_fallback_without_triton():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(KERNELS_SRC),
                                                                     os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", NO_TRITON], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_all_is_exported():
    for name in vlserve_kernels.__all__:
        assert hasattr(vlserve_kernels, name), name
    assert {"attention", "decode_attention", "attention_reference", "decode_attention_reference",
            "triton_available"} <= set(vlserve_kernels.__all__)


def test_attention_reference_matches_sdpa():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 5, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 3, 9, 8, generator=g, dtype=torch.float64) for _ in range(2))
    torch.testing.assert_close(attention_reference(q, k, v), F.scaled_dot_product_attention(q, k, v))
    # causal with Lq < Lk is aligned bottom-right: query i sees keys j <= i + 4
    allowed = torch.ones(5, 9, dtype=torch.bool).tril(diagonal=4)
    torch.testing.assert_close(attention_reference(q, k, v, causal=True),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=allowed))
    pad = torch.tensor([[False] * 9, [False] * 6 + [True] * 3])
    torch.testing.assert_close(
        attention_reference(q, k, v, key_padding_mask=pad, scale=0.5),
        F.scaled_dot_product_attention(q, k, v, attn_mask=~pad[:, None, None, :], scale=0.5))
    assert torch.all(attention_reference(q, k, v, key_padding_mask=torch.ones(2, 9, dtype=torch.bool)) == 0)


def test_decode_reference_matches_per_row_attention():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 2, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 7, 8, generator=g, dtype=torch.float64) for _ in range(2))
    row_to_kv, lengths = torch.tensor([1, 0, 1, 1]), torch.tensor([7, 3])
    out = decode_attention_reference(q, k, v, row_to_kv=row_to_kv, kv_lengths=lengths)
    for r in range(4):
        s, n = row_to_kv[r], lengths[row_to_kv[r]]
        expect = F.scaled_dot_product_attention(q[r, :, None], k[s, :, :n], v[s, :, :n])  # (H, 1, D)
        torch.testing.assert_close(out[r], expect[:, 0])


def test_block_choices_are_valid(monkeypatch):
    from vlserve_kernels import _common, attention_blocks, decode_blocks
    monkeypatch.setattr(_common, "sm_count", lambda index: 132)
    pow2 = lambda n: n >= 16 and n & (n - 1) == 0  # noqa: E731 - tl.arange/tl.dot need these
    for dev in (torch.device("cpu"), torch.device("cuda", 0)):
        for d in vlserve_kernels.SUPPORTED_HEAD_DIMS:
            for dtype in (torch.float16, torch.bfloat16, torch.float32):
                for lq, lk in ((1, 1), (32, 577), (577, 577), (2000, 3)):
                    a = attention_blocks(d, dtype, dev, lq, lk)
                    assert pow2(a.block_m) and pow2(a.block_n) and a.num_warps in (1, 4, 8)
                for rows, lk in ((1, 1), (64, 577), (256, 577), (64, 40), (3, 0)):
                    blk = decode_blocks(d, dtype, dev, rows, 12, lk)
                    assert pow2(blk.block_n) and blk.chunk % blk.block_n == 0
                    assert blk.num_splits * blk.chunk >= lk > (blk.num_splits - 1) * blk.chunk or lk == 0
