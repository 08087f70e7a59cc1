"""Tiny random BEiT-3 folders in unilm's layout, written with our own modules (no unilm), and
a sentencepiece model trained here on shapes-world text (the XLM-R one is 5 MB and not ours)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from vlserve.families.beit3.config import Beit3Config
from vlserve.families.beit3.loader import SPM, save_beit3
from vlserve.families.beit3.model import Beit3Model
from vlserve.shapes import generate
from vlserve.shapes.training import train_sentencepiece

TINY = Beit3Config(width=32, heads=4, layers=2, ffn=48, vocab_size=0, image_size=32, patch_size=8,
                   text_positions=40, retrieval=True, answers=5, caption=True)
ANSWERS = ("yes", "no", "red", "two", "circle")


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    lines = []
    for scene, qas in generate(n, seed):
        lines.append(scene.caption)
        lines += [qa.question for qa in qas]
    return lines


def train_spm(path: Path, texts: list[str] | None = None, vocab_size: int = 60) -> Path:
    return train_sentencepiece(path, texts or corpus(), vocab_size, model_type="unigram")


def randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # LayerNorms near one, not exactly; everything else at a scale that keeps states varied
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "_ln" in name or name.startswith("head.1")):
                p.copy_((1 + 0.2 * torch.randn(p.shape, generator=g)) if name.endswith("weight")
                        else 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() <= 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 * 1.5)


def make_beit3_folder(folder: Path, seed: int = 0, cfg: Beit3Config = TINY, answers=ANSWERS,
                      spm: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spm = spm or train_spm(folder / SPM)
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_file=str(spm)).get_piece_size() + 2  # + offset + <mask>
    cfg = dataclasses.replace(cfg, vocab_size=cfg.vocab_size or vocab + 3)  # padded, as unilm's 64010 is
    if cfg.answers:
        cfg = dataclasses.replace(cfg, answers=len(answers))
    model = Beit3Model(cfg)
    randomise(model, seed)
    if cfg.caption:
        with torch.no_grad():  # captions end at varied lengths
            model.mlm_head.bias[2] += 1.0
    save_beit3(model, folder, answers=tuple(answers) if cfg.answers else (), spm=spm)
    (folder / "model.toml").write_text(f'family = "beit3"\n[beit3]\nheads = {cfg.heads}\n')
    return folder
