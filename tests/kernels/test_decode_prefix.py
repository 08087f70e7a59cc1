"""vlserve_kernels.decode_attention with a shared key prefix (BEiT-3: image
tokens shared by the beams, one softmax with each beam's own cache) against
the float64 reference.

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

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    def empty_nan(*shape_and_opts):
        *shape, dtype, device = shape_and_opts
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    monkeypatch.setattr(_decode, "_empty_output", empty_nan)


def ref_of(q, k, v, prefix_k=None, prefix_v=None, **kw):
    if prefix_k is not None:
        kw.update(prefix_k=prefix_k.double(), prefix_v=prefix_v.double())
    return decode_attention_reference(q.double(), k.double(), v.double(), **kw)


def check(q, k, v, dtype, **kw):
    out = decode_attention(q, k, v, **kw)
    assert out.shape == q.shape and out.dtype == q.dtype and out.is_contiguous()
    assert_close(out, ref_of(q, k, v, **kw), dtype)
    return out


def inputs(rows, num_kv, cap, num_p, len_p, h, d, dtype, device, gen):
    q = randn((rows, h, d), dtype, device, gen)
    k, v = (randn((num_kv, h, cap, d), dtype, device, gen) for _ in range(2))
    pk, pv = (randn((num_p, h, len_p, d), dtype, device, gen) for _ in range(2))
    return q, k, v, pk, pv


@pytest.mark.parametrize("dtype", DTYPES)
def test_beams_share_prefix_rows(dtype, device, gen):
    # 2 images x 3 beams; the beams' self caches are reordered (row_to_kv).
    q, k, v, pk, pv = inputs(6, 6, 21, 2, 37, 2, 64, dtype, device, gen)
    kw = dict(prefix_k=pk, prefix_v=pv, row_to_prefix=torch.tensor([0, 0, 0, 1, 1, 1], device=device),
              prefix_padding_mask=padding_mask([37, 30], 37, device),
              row_to_kv=torch.tensor([2, 0, 1, 5, 5, 3], device=device),
              kv_lengths=torch.tensor([21, 3, 17, 0, 9, 1], device=device))
    check(q, k, v, dtype, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ragged_lengths_and_padded_prefix(dtype, device, gen):
    q, k, v, pk, pv = inputs(5, 5, 40, 5, 33, 2, 32, dtype, device, gen)
    lengths = torch.tensor([0, 40, 7, 0, 19], device=device)  # rows 0, 3: prefix only
    mask = padding_mask([33, 0, 12, 0, 33], 33, device)  # rows 1, 3: prefix all padding
    mask[4, ::3] = True
    out = check(q, k, v, dtype, kv_lengths=lengths, prefix_k=pk, prefix_v=pv,
                prefix_padding_mask=mask)
    assert torch.all(out[3] == 0)  # nothing valid in either segment
    assert torch.all(out[[0, 1, 2, 4]].abs().sum(-1) > 0)
    # Row 1 has no valid prefix key: plain decode over its own cache.
    own = decode_attention(q[1:2], k[1:2], v[1:2], kv_lengths=lengths[1:2])
    torch.testing.assert_close(out[1:2], own)


def test_rows_outside_the_prefix_see_only_their_own_keys(device, gen):
    q, k, v, pk, pv = inputs(5, 5, 18, 2, 20, 2, 16, torch.float32, device, gen)
    row_to_prefix = torch.tensor([1, -1, 2, 0, 99], device=device)  # -1, 2, 99 outside [0, 2)
    lengths = torch.tensor([18, 5, 0, 9, 18], device=device)
    out = check(q, k, v, torch.float32, kv_lengths=lengths, prefix_k=pk, prefix_v=pv,
                row_to_prefix=row_to_prefix)
    assert torch.all(out[2] == 0)
    own = decode_attention(q, k, v, kv_lengths=lengths)
    torch.testing.assert_close(out[[1, 4]], own[[1, 4]])


def test_empty_segments(device, gen):
    # Lp == 0 and Lk == 0: zeros; an empty prefix matches no prefix at all.
    q, k, v, pk, pv = inputs(3, 3, 0, 3, 0, 2, 16, torch.float32, device, gen)
    assert torch.all(check(q, k, v, torch.float32, prefix_k=pk, prefix_v=pv) == 0)
    _, k2, v2, _, _ = inputs(3, 3, 25, 1, 1, 2, 16, torch.float32, device, gen)
    lengths = torch.tensor([25, 0, 4], device=device)
    out = check(q, k2, v2, torch.float32, kv_lengths=lengths, prefix_k=pk, prefix_v=pv)
    torch.testing.assert_close(out, decode_attention(q, k2, v2, kv_lengths=lengths), atol=0, rtol=0)
    # No prefix rows at all (P == 0): every row is outside [0, P).
    empty_p = torch.zeros(0, 2, 5, 16, device=device)
    check(q, k2, v2, torch.float32, kv_lengths=lengths, prefix_k=empty_p, prefix_v=empty_p,
          row_to_prefix=torch.zeros(3, dtype=torch.long, device=device))
    assert decode_attention(q[:0], k2[:0], v2[:0], prefix_k=pk[:0], prefix_v=pv[:0]).shape == (0, 2, 16)


@pytest.mark.parametrize("len_p,len_k", [(50, 37), (9, 45), (45, 9), (1, 1)])
def test_split_counts_per_segment(len_p, len_k, device, gen):
    # On the CPU > 16 keys means several chunks; short segments have one.
    q, k, v, pk, pv = inputs(4, 2, len_k, 2, len_p, 2, 64, torch.float32, device, gen)
    check(q, k, v, torch.float32, prefix_k=pk, prefix_v=pv,
          row_to_kv=torch.tensor([1, 0, 0, 1], device=device),
          row_to_prefix=torch.tensor([0, 0, 1, 1], device=device),
          kv_lengths=torch.tensor([len_k, max(len_k - 5, 0)], device=device))


@pytest.mark.parametrize("chunk", [16, 32, 64])
def test_forced_blocks(chunk, monkeypatch, device, gen):
    # Many chunks per segment (SPLITS_POW2 > splits), CUDA-sized tiles too.
    def blocks(d, dtype, dev, rows, heads, len_k):
        return DecodeBlocks(16, chunk, -(-max(len_k, 1) // chunk), 1 if chunk == 16 else 4)
    monkeypatch.setattr(_decode, "decode_blocks", blocks)
    q, k, v, pk, pv = inputs(3, 3, 70, 3, 101, 2, 32, torch.float32, device, gen)
    check(q, k, v, torch.float32, prefix_k=pk, prefix_v=pv,
          prefix_padding_mask=random_mask(3, 101, gen, device),
          kv_lengths=torch.tensor([70, 33, 2], device=device))


def test_equals_decode_over_concatenated_keys(device, gen):
    # Independent check of the joint softmax: prefix ++ own keys by hand.
    q, k, v, pk, pv = inputs(4, 4, 19, 2, 23, 2, 32, torch.float32, device, gen)
    row_to_prefix = torch.tensor([1, 1, 0, 1], device=device)
    pmask = padding_mask([23, 18], 23, device)
    lengths = torch.tensor([19, 6, 0, 13], device=device)
    out = decode_attention(q, k, v, kv_lengths=lengths, prefix_k=pk, prefix_v=pv,
                           prefix_padding_mask=pmask, row_to_prefix=row_to_prefix)
    cat_k = torch.cat([pk[row_to_prefix], k], dim=2)
    cat_v = torch.cat([pv[row_to_prefix], v], dim=2)
    own_pad = torch.arange(19, device=device)[None, :] >= lengths[:, None]
    cat_mask = torch.cat([pmask[row_to_prefix], own_pad], dim=1)
    torch.testing.assert_close(out, decode_attention(q, cat_k, cat_v, key_padding_mask=cat_mask),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # interpreter: NaN keys, then masked
def test_garbage_in_ignored_keys(device, gen):
    q, k, v, pk, pv = inputs(3, 3, 24, 2, 30, 2, 32, torch.float32, device, gen)
    lengths = torch.tensor([5, 24, 0], dtype=torch.int32, device=device)
    pmask = padding_mask([30, 11], 30, device)
    pmask[0, 3] = True
    kw = dict(kv_lengths=lengths, prefix_padding_mask=pmask,
              row_to_prefix=torch.tensor([0, 1, 1], device=device))
    out = check(q, k, v, torch.float32, prefix_k=pk, prefix_v=pv, **kw)
    k[0, :, 5:], v[0, :, 5:] = float("nan"), 1e4
    k[2], v[2] = float("inf"), float("nan")
    pk[1, :, 11:], pv[1, :, 11:] = float("inf"), float("nan")
    pk[0, :, 3], pv[0, :, 3] = float("nan"), -1e4
    assert torch.equal(decode_attention(q, k, v, prefix_k=pk, prefix_v=pv, **kw), out)


def test_no_reads_outside_the_inputs(device, gen):
    q = nan_guarded(randn((4, 3, 16), torch.float32, device, gen))
    k, v = (nan_guarded(randn((2, 3, 21, 16), torch.float32, device, gen)) for _ in range(2))
    pk, pv = (nan_guarded(randn((2, 3, 37, 16), torch.float32, device, gen)) for _ in range(2))
    pmask = nan_guarded(padding_mask([37, 30], 37, device).view(torch.uint8)).view(torch.bool)
    check(q, k, v, torch.float32, row_to_kv=torch.tensor([1, 0, 0, 1], device=device),
          kv_lengths=torch.tensor([21, 20], device=device), prefix_k=pk, prefix_v=pv,
          prefix_padding_mask=pmask, row_to_prefix=torch.tensor([1, 1, 0, 0], device=device))


def test_strided_prefix(device, gen):
    rows, h, d = 4, 2, 32
    q, k, v, _, _ = inputs(rows, rows, 20, 1, 1, h, d, torch.float32, device, gen)
    # A slice along Lp of a larger (P, Lmax, H, D) buffer, transposed to (P, H, Lp, D).
    buf = randn((2, 2, 60, h, d), torch.float32, device, gen)
    pk = buf[0].permute(0, 2, 1, 3)[:, :, 5:46]
    pv = buf[1].permute(0, 2, 1, 3)[:, :, 5:46]
    assert not pk.is_contiguous()
    check(q, k, v, torch.float32, prefix_k=pk, prefix_v=pv,
          row_to_prefix=torch.tensor([1, 0, 9, 0, 1, 9, 0, 9], device=device)[::2],
          prefix_padding_mask=random_mask(2, 82, gen, device)[:, ::2])
    # K stored transposed, (P, H, D, Lp), viewed as (P, H, Lp, D).
    pk_t = randn((2, h, d, 41), torch.float32, device, gen).transpose(2, 3)
    check(q, k, v, torch.float32, prefix_k=pk_t, prefix_v=pv,
          row_to_prefix=torch.tensor([0, 1, 1, 0], device=device))


def test_fallback_head_dim(monkeypatch, caplog, device, gen):
    monkeypatch.setattr(_common, "_warned", set())
    q, k, v, pk, pv = inputs(4, 4, 9, 2, 7, 2, 24, torch.float32, device, gen)
    kw = dict(kv_lengths=torch.tensor([9, 0, 3, 0], device=device), prefix_k=pk, prefix_v=pv,
              prefix_padding_mask=padding_mask([7, 0], 7, device),
              row_to_prefix=torch.tensor([0, 0, 1, 5], device=device))
    with caplog.at_level(logging.WARNING, logger="vlserve_kernels"):
        out = check(q, k, v, torch.float32, **kw)
    assert torch.all(out[3] == 0) and torch.all(out[:3].abs().sum(-1) > 0)
    assert any("head dim 24" in r.getMessage() for r in caplog.records)
    check(q, k, v, torch.float32, prefix_k=pk[:0], prefix_v=pv[:0],
          row_to_prefix=torch.zeros(4, dtype=torch.long, device=device))


def test_without_prefix_is_unchanged(monkeypatch, device, gen):
    # Same numbers as the old reference, and one direct-write launch per call.
    launches = []
    split, combine, log2e = _decode._kernels()

    class Count:
        def __init__(self, fn, name):
            self.fn, self.name = fn, name

        def __getitem__(self, grid):
            launches.append((self.name, grid))
            return self.fn[grid]

    monkeypatch.setattr(_decode, "_kernels", lambda: (Count(split, "split"), Count(combine, "combine"), log2e))
    monkeypatch.setattr(_common, "check_runnable", lambda *a: None)
    q, k, v, pk, pv = inputs(3, 3, 12, 3, 12, 2, 16, torch.float32, device, gen)
    lengths = torch.tensor([12, 4, 0], device=device)
    out = decode_attention(q, k, v, kv_lengths=lengths)
    ref = decode_attention_reference(q.double(), k.double(), v.double(), kv_lengths=lengths)
    assert_close(out, ref, torch.float32)
    assert launches == [("split", (3, 2, 1))]
    launches.clear()
    check(q, k, v, torch.float32, kv_lengths=lengths, prefix_k=pk, prefix_v=pv)
    assert launches == [("split", (3, 2, 1)), ("split", (3, 2, 1)), ("combine", (6,))]


@pytest.mark.parametrize("kw,match", [
    (dict(prefix_k=lambda pk, pv: pk), "given together"),
    (dict(prefix_v=lambda pk, pv: pv), "given together"),
    (dict(prefix_padding_mask=torch.zeros(3, 5, dtype=torch.bool)), "need prefix_k"),
    (dict(row_to_prefix=torch.zeros(3, dtype=torch.long)), "need prefix_k"),
    (dict(prefix_k=lambda pk, pv: pk[:, :1], prefix_v=lambda pk, pv: pv[:, :1]), "prefix_k has shape"),
    (dict(prefix_k=lambda pk, pv: pk[..., :8], prefix_v=lambda pk, pv: pv[..., :8]), "prefix_k has shape"),
    (dict(prefix_k=lambda pk, pv: pk[0], prefix_v=lambda pk, pv: pv[0]), "prefix_k has shape"),
    (dict(prefix_k=lambda pk, pv: pk, prefix_v=lambda pk, pv: pv[:, :, :3]), "prefix_v has shape"),
    (dict(prefix_k=lambda pk, pv: pk[:2], prefix_v=lambda pk, pv: pv[:2]), "one row per query row"),
    (dict(prefix_k=lambda pk, pv: pk.half(), prefix_v=lambda pk, pv: pv.half()), "dtype"),
    (dict(prefix_k=lambda pk, pv: pk, prefix_v=lambda pk, pv: pv,
          prefix_padding_mask=torch.zeros(3, 4, dtype=torch.bool)), "prefix_padding_mask has shape"),
    (dict(prefix_k=lambda pk, pv: pk, prefix_v=lambda pk, pv: pv,
          prefix_padding_mask=torch.zeros(3, 5)), "prefix_padding_mask must be a bool"),
    (dict(prefix_k=lambda pk, pv: pk, prefix_v=lambda pk, pv: pv,
          row_to_prefix=torch.zeros(2, dtype=torch.long)), "row_to_prefix has shape"),
    (dict(prefix_k=lambda pk, pv: pk, prefix_v=lambda pk, pv: pv,
          row_to_prefix=torch.zeros(3)), "row_to_prefix must be an integer"),
    (dict(prefix_k=lambda pk, pv: pk.to("meta"), prefix_v=lambda pk, pv: pv.to("meta")), "prefix_k is on"),
])
def test_bad_prefix_arguments_raise_value_error(kw, match, device, gen):
    q, k, v, pk, pv = inputs(3, 3, 6, 3, 5, 2, 16, torch.float32, device, gen)
    extra = {name: value(pk, pv) if callable(value) else value.to(device) for name, value in kw.items()}
    with pytest.raises(ValueError, match=match):
        decode_attention(q, k, v, **extra)

