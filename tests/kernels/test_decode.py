"""vlserve_kernels.decode_attention against the float64 reference.

Every output buffer is pre-filled with NaN (autouse `poison`), so a test also
proves that every output element was written.
"""

import logging

import pytest
import torch

pytest.importorskip("triton")

from kernel_helpers import assert_close, nan_guarded, padding_mask, randn, random_mask  # noqa: E402
from vlserve_kernels import DecodeBlocks, decode_attention, decode_attention_reference  # noqa: E402
from vlserve_kernels import _common, _decode  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]  # no tl.dot: bf16 runs in the interpreter


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    def empty_nan(*shape_and_opts):
        *shape, dtype, device = shape_and_opts
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    monkeypatch.setattr(_decode, "_empty_output", empty_nan)


def check(q, k, v, dtype, **kw):
    out = decode_attention(q, k, v, **kw)
    ref = decode_attention_reference(q.double(), k.double(), v.double(), **kw)
    assert out.shape == q.shape and out.dtype == q.dtype and out.is_contiguous()
    assert_close(out, ref, dtype)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_self_attention_ragged_lengths(dtype, device, gen):
    rows, h, d, cap = 6, 2, 64, 40
    q = randn((rows, h, d), dtype, device, gen)
    k, v = (randn((rows, h, cap, d), dtype, device, gen) for _ in range(2))
    lengths = torch.tensor([1, 7, 40, 33, 0, 17], device=device)  # row 4: empty -> zeros
    out = check(q, k, v, dtype, kv_lengths=lengths)
    assert torch.all(out[4] == 0)


def test_self_attention_ignores_garbage_past_length(device, gen):
    rows, h, d, cap = 3, 2, 32, 24
    q = randn((rows, h, d), torch.float32, device, gen)
    k, v = (randn((rows, h, cap, d), torch.float32, device, gen) for _ in range(2))
    lengths = torch.tensor([5, 24, 11], dtype=torch.int32, device=device)
    out = decode_attention(q, k, v, kv_lengths=lengths)
    k[0, :, 5:], v[0, :, 5:] = float("nan"), 1e4  # beyond row 0's length
    k[2, :, 11:], v[2, :, 11:] = float("inf"), -1e4
    assert torch.equal(decode_attention(q, k, v, kv_lengths=lengths), out)


def test_no_reads_outside_the_inputs(device, gen):
    q = nan_guarded(randn((4, 3, 16), torch.float32, device, gen))
    k, v = (nan_guarded(randn((2, 3, 37, 16), torch.float32, device, gen)) for _ in range(2))
    mask = nan_guarded(padding_mask([37, 30], 37, device).view(torch.uint8)).view(torch.bool)
    check(q, k, v, torch.float32, row_to_kv=torch.tensor([1, 0, 0, 1], device=device),
          key_padding_mask=mask, kv_lengths=torch.tensor([37, 35], device=device))


def test_length_one_everywhere(device, gen):
    q = randn((4, 3, 16), torch.float32, device, gen)
    k, v = (randn((4, 3, 8, 16), torch.float32, device, gen) for _ in range(2))
    out = check(q, k, v, torch.float32, kv_lengths=torch.ones(4, dtype=torch.long, device=device))
    # One key: the output is exactly its value.
    torch.testing.assert_close(out, v[:, :, 0])
    q1 = randn((1, 1, 16), torch.float32, device, gen)
    k1, v1 = (randn((1, 1, 1, 16), torch.float32, device, gen) for _ in range(2))
    check(q1, k1, v1, torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_attention_shared_kv_rows(dtype, device, gen):
    # 3 beams per image read one copy of the image's K/V.
    images, beams, h, d, lk = 2, 3, 2, 64, 145
    rows = images * beams
    q = randn((rows, h, d), dtype, device, gen)
    k, v = (randn((images, h, lk, d), dtype, device, gen) for _ in range(2))
    row_to_kv = torch.arange(images, device=device).repeat_interleave(beams)  # [0,0,0,1,1,1]
    mask = padding_mask([lk, 77], lk, device)
    out = check(q, k, v, dtype, row_to_kv=row_to_kv, key_padding_mask=mask)
    # Same as expanding K/V per row (what the kernel avoids doing).
    expanded = decode_attention(q, k[row_to_kv], v[row_to_kv], key_padding_mask=mask[row_to_kv])
    torch.testing.assert_close(out, expanded, atol=0, rtol=0)


def test_vit_length_577_with_mask_and_lengths(device, gen):
    q = randn((4, 2, 64), torch.float32, device, gen)
    k, v = (randn((2, 2, 577, 64), torch.float32, device, gen) for _ in range(2))
    check(q, k, v, torch.float32, row_to_kv=torch.tensor([1, 0, 1, 1], device=device),
          key_padding_mask=random_mask(2, 577, gen, device),
          kv_lengths=torch.tensor([300, 577], device=device))


def test_fully_padded_and_out_of_range_rows_are_zero(device, gen):
    q = randn((5, 2, 32), torch.float32, device, gen)
    k, v = (randn((3, 2, 33, 32), torch.float32, device, gen) for _ in range(2))
    mask = padding_mask([33, 0, 9], 33, device)  # KV row 1: all padding
    row_to_kv = torch.tensor([0, 1, 2, -1, 3], device=device)  # -1 and 3 are outside [0, 3)
    out = check(q, k, v, torch.float32, row_to_kv=row_to_kv, key_padding_mask=mask)
    assert torch.all(out[[1, 3, 4]] == 0) and torch.all(out[[0, 2]].abs().sum(-1) > 0)


def test_empty_cache_and_no_rows(device, gen):
    q = randn((3, 2, 16), torch.float32, device, gen)
    k, v = (randn((3, 2, 0, 16), torch.float32, device, gen) for _ in range(2))
    assert torch.all(check(q, k, v, torch.float32) == 0)
    assert decode_attention(q[:0], k[:0], v[:0]).shape == (0, 2, 16)


def test_lengths_clamped_to_capacity(device, gen):
    q = randn((2, 2, 16), torch.float32, device, gen)
    k, v = (randn((2, 2, 10, 16), torch.float32, device, gen) for _ in range(2))
    out = decode_attention(q, k, v, kv_lengths=torch.tensor([99, -3], device=device))
    ref = decode_attention_reference(q.double(), k.double(), v.double(),
                                     kv_lengths=torch.tensor([10, 0], device=device))
    assert_close(out, ref, torch.float32)


@pytest.mark.parametrize("d", [16, 32, 128])
def test_head_dims(d, device, gen):
    q = randn((3, 2, d), torch.float32, device, gen)
    k, v = (randn((3, 2, 65, d), torch.float32, device, gen) for _ in range(2))
    check(q, k, v, torch.float32, kv_lengths=torch.tensor([65, 1, 40], device=device))


def test_strided_inputs(device, gen):
    rows, h, d, cap = 3, 2, 32, 50
    packed = randn((rows, 3, h, d), torch.float32, device, gen)
    q = packed[:, 0]  # (R, H, D) view of a packed qkv projection
    cache = randn((2, rows, cap, h, d), torch.float32, device, gen)  # (2, R, Lmax, H, D)
    k = cache[0].permute(0, 2, 1, 3)[:, :, :37]  # (R, H, 37, D), non-contiguous
    v = cache[1].permute(0, 2, 1, 3)[:, :, :37]
    lengths = torch.tensor([37, 0, 3, 0, 20, 0], device=device)[::2]  # non-contiguous too
    row_to_kv = torch.tensor([2, 9, 0, 9, 1, 9], device=device)[::2]
    mask = random_mask(rows, 2 * 37, gen, device)[:, ::2]  # (R, 37) non-contiguous
    check(q, k, v, torch.float32, kv_lengths=lengths, row_to_kv=row_to_kv, key_padding_mask=mask)


@pytest.mark.parametrize("blocks", [DecodeBlocks(16, 160, 1, 1), DecodeBlocks(16, 16, 10, 1),
                                    DecodeBlocks(64, 64, 3, 4), DecodeBlocks(32, 96, 2, 4)])
def test_split_configurations(blocks, monkeypatch, device, gen):
    # One chunk (direct write) through many chunks (combine kernel), plus the
    # CUDA tile sizes; 145 keys = cdiv(145, chunk) chunks in every config.
    assert blocks.num_splits == -(-145 // blocks.chunk)
    monkeypatch.setattr(_decode, "decode_blocks", lambda *a: blocks)
    q = randn((4, 2, 64), torch.float32, device, gen)
    k, v = (randn((2, 2, 145, 64), torch.float32, device, gen) for _ in range(2))
    check(q, k, v, torch.float32, row_to_kv=torch.tensor([0, 1, 1, 0], device=device),
          kv_lengths=torch.tensor([145, 20], device=device))


def test_matches_last_row_of_causal_attention(device, gen):
    # Decode step t over a cache of t keys == the last query of causal attention.
    from vlserve_kernels import attention
    b, h, l, d = 2, 2, 13, 32
    q, k, v = (randn((b, h, l, d), torch.float32, device, gen) for _ in range(3))
    full = attention(q, k, v, causal=True)
    step = decode_attention(q[:, :, -1], k, v, kv_lengths=torch.full((b,), l, device=device))
    torch.testing.assert_close(step, full[:, :, -1], atol=1e-5, rtol=1e-5)


def test_fallback_head_dim_warns_once(monkeypatch, caplog, device, gen):
    monkeypatch.setattr(_common, "_warned", set())
    q = randn((4, 2, 24), torch.float32, device, gen)
    k, v = (randn((2, 2, 9, 24), torch.float32, device, gen) for _ in range(2))
    kw = dict(row_to_kv=torch.tensor([0, 0, 1, 1], device=device),
              key_padding_mask=padding_mask([9, 0], 9, device))
    with caplog.at_level(logging.WARNING, logger="vlserve_kernels"):
        out = check(q, k, v, torch.float32, **kw)
        check(q, k, v, torch.float32, **kw)
    assert torch.all(out[2:] == 0)
    assert len([r for r in caplog.records if "head dim 24" in r.getMessage()]) == 1


@pytest.mark.parametrize("kw,match", [
    (dict(k=lambda k: k[:2], v=lambda v: v[:2]), "one KV row per query row"),
    (dict(q=lambda q: q[:, :, None]), "3-D"),
    (dict(k=lambda k: k[:, :1], v=lambda v: v[:, :1]), "k has shape"),
    (dict(kv_lengths=torch.ones(2, dtype=torch.long)), "kv_lengths has shape"),
    (dict(kv_lengths=torch.ones(3)), "integer"),
    (dict(row_to_kv=torch.zeros(2, dtype=torch.long)), "row_to_kv has shape"),
    (dict(key_padding_mask=torch.zeros(3, 5, dtype=torch.bool)), "key_padding_mask has shape"),
    (dict(q=lambda q: q.half()), "share a dtype"),
])
def test_bad_inputs_raise_value_error(kw, match, device, gen):
    q = randn((3, 2, 16), torch.float32, device, gen)
    k, v = (randn((3, 2, 6, 16), torch.float32, device, gen) for _ in range(2))
    args = dict(q=q, k=k, v=v)
    extra = {}
    for name, value in kw.items():
        if callable(value):
            args[name] = value(args[name])
        else:
            extra[name] = value.to(device)
    with pytest.raises(ValueError, match=match):
        decode_attention(args["q"], args["k"], args["v"], **extra)
