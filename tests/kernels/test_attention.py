"""vlserve_kernels.attention against the float64 reference.

Runs under the Triton interpreter on the CPU (conftest) or compiled on CUDA.
Every kernel output buffer is pre-filled with NaN (autouse `poison`), so a
test also proves that every output element was written.
"""

import logging

import pytest
import torch

pytest.importorskip("triton")

from kernel_helpers import (  # noqa: E402
    INTERPRETED, assert_close, nan_guarded, padding_mask, randn, random_mask,
)
from vlserve_kernels import AttentionBlocks, attention, attention_reference  # noqa: E402
from vlserve_kernels import _attention, _common  # noqa: E402


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    def empty_nan(*shape_and_opts):
        *shape, dtype, device = shape_and_opts
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    monkeypatch.setattr(_attention, "_empty_output", empty_nan)


def make_qkv(b, h, lq, lk, d, dtype, device, gen):
    return (randn((b, h, lq, d), dtype, device, gen), randn((b, h, lk, d), dtype, device, gen),
            randn((b, h, lk, d), dtype, device, gen))


def check(q, k, v, dtype, **kw):
    out = attention(q, k, v, **kw)
    ref = attention_reference(q.double(), k.double(), v.double(), **kw)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert_close(out, ref, dtype)
    return out


@pytest.mark.parametrize("length", [1, 2, 7, 33, 65, 145])
def test_self_attention_lengths_with_padding(length, device, gen):
    q, k, v = make_qkv(2, 2, length, length, 64, torch.float32, device, gen)
    mask = padding_mask([length, max(1, length // 2)], length, device)
    check(q, k, v, torch.float32, key_padding_mask=mask)


def test_vit_length_577(device, gen):
    q, k, v = make_qkv(1, 2, 577, 577, 64, torch.float32, device, gen)
    check(q, k, v, torch.float32)


@pytest.mark.parametrize("d", [16, 32, 64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_head_dims(d, causal, device, gen):
    q, k, v = make_qkv(2, 3, 33, 33, d, torch.float32, device, gen)
    check(q, k, v, torch.float32, causal=causal)


@pytest.mark.parametrize("lq,lk", [(1, 40), (7, 33), (33, 65), (32, 32)])
def test_causal_with_padding(lq, lk, device, gen):
    q, k, v = make_qkv(3, 2, lq, lk, 32, torch.float32, device, gen)
    mask = random_mask(3, lk, gen, device)
    check(q, k, v, torch.float32, causal=True, key_padding_mask=mask)


def test_causal_more_queries_than_keys_gives_zero_rows(device, gen):
    # Lq > Lk: queries i < Lq - Lk see no key at all.
    q, k, v = make_qkv(1, 2, 9, 4, 16, torch.float32, device, gen)
    out = check(q, k, v, torch.float32, causal=True)
    assert torch.all(out[:, :, :5] == 0)


@pytest.mark.parametrize("lq,lk", [(32, 145), (5, 577), (33, 7), (1, 65)])
def test_cross_attention_with_key_padding(lq, lk, device, gen):
    q, k, v = make_qkv(2, 2, lq, lk, 64, torch.float32, device, gen)
    mask = padding_mask([lk, (lk + 1) // 3], lk, device)
    check(q, k, v, torch.float32, key_padding_mask=mask)


@pytest.mark.parametrize("causal", [False, True])
def test_all_keys_padded_rows_are_zero(causal, device, gen):
    q, k, v = make_qkv(3, 2, 17, 17, 32, torch.float32, device, gen)
    mask = padding_mask([17, 0, 5], 17, device)  # batch 1: every key padded
    if causal:
        mask[2] = torch.arange(17, device=device) < 4  # left padding: queries 0..3 see only pads
    out = check(q, k, v, torch.float32, key_padding_mask=mask, causal=causal)
    assert torch.all(out[1] == 0)
    if causal:
        assert torch.all(out[2, :, :4] == 0) and torch.all(out[2, :, 4:].abs().sum(-1) > 0)


def test_packed_qkv_strided_views_and_output_layout(device, gen):
    b, l, h, d = 2, 33, 3, 32
    x = randn((b, l, 3 * h * d), torch.float32, device, gen)
    qkv = x.view(b, l, 3, h, d).permute(2, 0, 3, 1, 4)  # (3, B, H, L, D), non-contiguous
    mask = random_mask(b, 2 * l, gen, device)[:, ::2]  # (B, L) non-contiguous mask
    out = check(qkv[0], qkv[1], qkv[2], torch.float32, key_padding_mask=mask)
    # Output is a (B, H, L, D) view of (B, L, H, D) memory: merging heads is free.
    assert out.transpose(1, 2).is_contiguous()
    merged = out.transpose(1, 2).reshape(b, l, h * d)  # (B, L, H*D)
    assert merged.data_ptr() == out.data_ptr()


@pytest.mark.parametrize("causal", [False, True])
def test_no_reads_outside_the_inputs(causal, device, gen):
    # Odd lengths put every tile edge inside the NaN guard around q, k, v.
    q, k, v = (nan_guarded(t) for t in make_qkv(2, 3, 7, 37, 16, torch.float32, device, gen))
    check(q, k, v, torch.float32, causal=causal, key_padding_mask=nan_guarded(
        padding_mask([37, 20], 37, device).view(torch.uint8)).view(torch.bool))


def test_custom_scale(device, gen):
    q, k, v = make_qkv(1, 2, 7, 9, 16, torch.float32, device, gen)
    check(q, k, v, torch.float32, scale=0.3)


@pytest.mark.parametrize("blocks", [AttentionBlocks(128, 64, 4, 3), AttentionBlocks(64, 32, 4, 2),
                                    AttentionBlocks(16, 128, 4, 2)])
def test_gpu_tile_shapes(blocks, monkeypatch, device, gen):
    # The CUDA tile shapes, exercised here too (under the interpreter).
    monkeypatch.setattr(_attention, "attention_blocks", lambda *a: blocks)
    q, k, v = make_qkv(2, 2, 145, 145, 64, torch.float32, device, gen)
    mask = padding_mask([145, 70], 145, device)
    check(q, k, v, torch.float32, key_padding_mask=mask, causal=True)


def test_float16(device, gen):
    q, k, v = make_qkv(2, 2, 65, 33, 64, torch.float16, device, gen)
    check(q, k, v, torch.float16, key_padding_mask=padding_mask([33, 10], 33, device))
    check(q[:, :, :33], k, v, torch.float16, causal=True)


@pytest.mark.skipif(INTERPRETED, reason="the Triton interpreter multiplies bf16 tl.dot operands "
                                        "as raw bits; bf16 attention is tested on CUDA only")
def test_bfloat16(device, gen):
    q, k, v = make_qkv(2, 2, 65, 33, 64, torch.bfloat16, device, gen)
    check(q, k, v, torch.bfloat16, key_padding_mask=padding_mask([33, 10], 33, device))


@pytest.mark.skipif(not INTERPRETED, reason="interpreter-only limitation")
def test_bfloat16_refused_under_interpreter(gen):
    q, k, v = make_qkv(1, 1, 4, 4, 16, torch.bfloat16, "cpu", gen)
    with pytest.raises(ValueError, match="interpreter"):
        attention(q, k, v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fallback_head_dim_uses_sdpa_and_warns_once(dtype, monkeypatch, caplog, device, gen):
    monkeypatch.setattr(_common, "_warned", set())
    q, k, v = make_qkv(2, 2, 7, 9, 24, dtype, device, gen)
    mask = padding_mask([9, 0], 9, device)  # batch 1 all padded: zeros, not NaN
    with caplog.at_level(logging.WARNING, logger="vlserve_kernels"):
        out = check(q, k, v, dtype, key_padding_mask=mask, causal=True)
        check(q, k, v, dtype)
    assert torch.all(out[1] == 0)
    assert out.transpose(1, 2).is_contiguous()  # same layout as the kernel path
    warnings = [r for r in caplog.records if "head dim 24" in r.getMessage()]
    assert len(warnings) == 1


def test_empty_query_and_no_keys(device, gen):
    q, k, v = make_qkv(2, 2, 0, 5, 16, torch.float32, device, gen)
    assert attention(q, k, v).shape == (2, 2, 0, 16)
    q, k, v = make_qkv(2, 2, 3, 0, 16, torch.float32, device, gen)
    assert torch.all(attention(q, k, v) == 0)  # no key at all: zeros, as fully padded rows


def test_batch_split_across_launches(monkeypatch, device, gen):
    # Stands in for B*H > 65535 (the CUDA grid's y limit): 3 launches of 2 batches.
    monkeypatch.setattr(_attention, "_MAX_GRID_Y", 5)
    q, k, v = make_qkv(5, 2, 9, 11, 16, torch.float32, device, gen)
    check(q, k, v, torch.float32, key_padding_mask=padding_mask([11, 3, 0, 7, 11], 11, device),
          causal=True)


@pytest.mark.parametrize("bad,match", [
    (lambda q, k, v, m: (q.half(), k, v, None), "share a dtype"),
    (lambda q, k, v, m: (q.int(), k.int(), v.int(), None), "dtype"),
    (lambda q, k, v, m: (q[0], k[0], v[0], None), "4-D"),
    (lambda q, k, v, m: (q, k[:, :1], v[:, :1], None), "k has shape"),
    (lambda q, k, v, m: (q, k, v[..., :8], None), "v has shape"),
    (lambda q, k, v, m: (q, k, v, m.int()), "bool"),
    (lambda q, k, v, m: (q, k, v, m[:, :3]), "key_padding_mask has shape"),
])
def test_bad_inputs_raise_value_error(bad, match, device, gen):
    q, k, v = make_qkv(2, 2, 5, 6, 16, torch.float32, device, gen)
    q, k, v, mask = bad(q, k, v, torch.zeros(2, 6, dtype=torch.bool, device=device))
    with pytest.raises(ValueError, match=match):
        attention(q, k, v, key_padding_mask=mask)
