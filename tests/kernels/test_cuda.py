"""Compiled-kernel checks that need a CUDA device (skipped elsewhere): 16-bit
inputs at BLIP shapes, the D=128 tiles, CUDA-graph capture of decode.
Speed is measured by bench/kernels.py, never by tests."""

import pytest
import torch

pytest.importorskip("triton")

from kernel_helpers import INTERPRETED, assert_close, padding_mask, randn  # noqa: E402
from vlserve_kernels import attention, attention_reference  # noqa: E402
from vlserve_kernels import decode_attention, decode_attention_reference  # noqa: E402

pytestmark = pytest.mark.skipif(INTERPRETED or not torch.cuda.is_available(),
                                reason="needs a CUDA device, without TRITON_INTERPRET")

HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("b,h,lq,lk,d,causal", [
    (2, 12, 577, 577, 64, False),  # ViT-B/16 @ 384
    (2, 16, 145, 145, 128, False),
    (4, 12, 32, 32, 64, True),     # decoder prompt prefill
    (4, 12, 32, 577, 64, False),   # cross-attention to image tokens
])
def test_attention_half_precision(dtype, b, h, lq, lk, d, causal, gen):
    dev = torch.device("cuda")
    x = randn((b, lq, 3 * h * d), dtype, dev, gen)
    q = x.view(b, lq, 3, h, d).permute(2, 0, 3, 1, 4)[0]  # (B, H, Lq, D) strided
    k, v = (randn((b, h, lk, d), dtype, dev, gen) for _ in range(2))
    mask = padding_mask([lk] + [max(1, lk // 3)] * (b - 1), lk, dev)
    out = attention(q, k, v, key_padding_mask=mask, causal=causal)
    ref = attention_reference(q.double(), k.double(), v.double(), key_padding_mask=mask, causal=causal)
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_decode_cross_half_precision(dtype, gen):
    dev = torch.device("cuda")
    rows, images, h, lk, d = 64, 22, 12, 577, 64
    q = randn((rows, h, d), dtype, dev, gen)
    k, v = (randn((images, h, lk, d), dtype, dev, gen) for _ in range(2))
    row_to_kv = torch.arange(rows, device=dev) // 3
    lengths = torch.randint(1, lk + 1, (images,), generator=gen).to(dev)
    out = decode_attention(q, k, v, row_to_kv=row_to_kv, kv_lengths=lengths)
    ref = decode_attention_reference(q.double(), k.double(), v.double(), row_to_kv=row_to_kv,
                                     kv_lengths=lengths)
    assert_close(out, ref, dtype)


def test_decode_is_cuda_graph_capturable(gen):
    dev = torch.device("cuda")
    q = randn((6, 12, 64), torch.float16, dev, gen)
    k, v = (randn((6, 12, 48, 64), torch.float16, dev, gen) for _ in range(2))
    lengths = torch.tensor([1, 5, 48, 20, 9, 33], device=dev)
    decode_attention(q, k, v, kv_lengths=lengths)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = decode_attention(q, k, v, kv_lengths=lengths)
    lengths.copy_(torch.tensor([48, 48, 2, 7, 1, 30], device=dev))
    graph.replay()
    torch.cuda.synchronize()
    ref = decode_attention_reference(q.double(), k.double(), v.double(), kv_lengths=lengths)
    assert_close(out, ref, torch.float16)
