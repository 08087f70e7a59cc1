"""AttentionBackend.decode_prefixed (BEiT-3's captions: a shared per-image prefix and each
row's own cache, one softmax) on the torch backends, against the float64 reference of
decode_attention's prefix segment, query by query: beams sharing a prefix, padded prefixes,
ragged lengths."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "kernels"))
from vlserve_kernels import decode_attention_reference  # noqa: E402
from vlserve.engine.generation.batch import _grouping  # noqa: E402
from vlserve.models.attention import EagerAttention, SdpaAttention  # noqa: E402


@pytest.mark.parametrize("backend", [EagerAttention(), SdpaAttention()], ids=["eager", "sdpa"])
@pytest.mark.parametrize("sizes", [[1, 1, 1], [3, 1, 2], [4]], ids=["one-each", "beams", "one-source"])
def test_matches_the_reference_per_query(backend, sizes):
    g = torch.Generator().manual_seed(len(sizes) * 10 + sum(sizes))
    s, r, h, d, lp, cap, nq = len(sizes), sum(sizes), 3, 16, 11, 9, 2
    q = torch.randn(r, h, nq, d, generator=g)
    pk, pv = torch.randn(2, s, h, lp, d, generator=g)
    ck, cv = torch.randn(2, r, h, cap, d, generator=g)
    pad = torch.zeros(s, lp, dtype=torch.bool)
    pad[0, 7:] = True  # a shorter image
    lengths = torch.stack([torch.arange(r) % cap + 1, torch.arange(r) % cap + 2], 1).clamp(max=cap)
    groups = _grouping(sizes, torch.device("cpu"))
    row_src = groups[0] if groups is not None else torch.arange(r)
    got = backend.decode_prefixed(q, pk, pv, pad, groups, ck, cv, lengths)
    for j in range(nq):
        want = decode_attention_reference(q[:, :, j].double(), ck.double(), cv.double(), kv_lengths=lengths[:, j],
                                          prefix_k=pk.double(), prefix_v=pv.double(), prefix_padding_mask=pad,
                                          row_to_prefix=row_src)
        torch.testing.assert_close(got[:, :, j].double(), want, atol=1e-5, rtol=0)
