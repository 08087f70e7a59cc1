"""Tiny random CoCa folders in open_clip's layout, written with our own modules (no open_clip)."""

from __future__ import annotations

from pathlib import Path

import torch

from vlserve.families.coca.config import CocaConfig
from vlserve.families.coca.loader import save_coca
from vlserve.families.coca.text import Coca

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8,
                       "attentional_pool": True, "attn_pooler_heads": 4, "attn_pooler_queries": 5},
        "text_cfg": {"context_length": 16, "width": 32, "heads": 4, "layers": 2, "embed_cls": True},
        "multimodal_cfg": {"context_length": 16, "width": 32, "heads": 4, "layers": 2}}
EOT = 49407


def make_coca_folder(folder: Path, seed: int = 0, cfg: dict | None = None) -> Path:
    model = Coca(CocaConfig.from_open_clip(cfg or TINY))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # re-randomised: LayerNorms near one, not exactly
        for name, p in model.named_parameters():
            if name.endswith("weight") and ".ln" in "." + name.split(".", 1)[-1]:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() <= 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 * 1.5)
        model.text_decoder.text_projection[:, EOT] -= 0.5  # captions end at varied lengths
    return save_coca(model, folder)
