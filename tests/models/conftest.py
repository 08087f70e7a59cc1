"""Tiny random transformers BLIP models and their saved folders, built once per session."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.tiny_blip import SEP_ID, SPECS, build_hf, save_hf, save_union, share_vision

pytest.importorskip("transformers")


class TinySet:
    """The three public layouts for one spec, plus a union folder holding all of them."""

    def __init__(self, spec, root):
        self.spec = spec
        self.hf = {kind: build_hf(kind, spec, seed=i) for i, kind in enumerate(("caption", "retrieval", "vqa"))}
        with torch.no_grad():  # make EOS likely enough that sequences end at varied lengths
            for kind in ("caption", "vqa"):
                self.hf[kind].text_decoder.cls.predictions.bias[SEP_ID] += 2.5
        share_vision(list(self.hf.values()))
        self.folders = {kind: save_hf(m, root / f"{spec.name}-{kind}", spec) for kind, m in self.hf.items()}
        self.folders["union"] = save_union(list(self.hf.values()), root / f"{spec.name}-union", spec)

    def pixels(self, n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn((n, 3, self.spec.image_size, self.spec.image_size), generator=g)


@pytest.fixture(scope="session", params=SPECS, ids=[s.name for s in SPECS])
def tiny(request, tmp_path_factory) -> TinySet:
    return TinySet(request.param, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_pow2(tmp_path_factory) -> TinySet:
    return TinySet(SPECS[0], tmp_path_factory.mktemp("tiny-pow2"))
