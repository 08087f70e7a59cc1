"""Train beit3-toy: one small BEiT-3 (Multiway transformer) learning retrieval, VQA and
captioning jointly on the shapes world (objectives.py), saved in unilm's layout: unilm's
BEiT3ForRetrieval, BEiT3ForVisualQuestionAnswering and BEiT3ForCaptioning each load it.

    nice -n 15 .venv/bin/python model_repo/beit3-toy/train.py --workdir /tmp/beit3-toy-run

Seeded and resumable, as the other toys' train.py: the state goes to --workdir every
--ckpt-every steps and a rerun with the same --workdir continues; scenes are drawn per step
from the seed (seeds >= 1,000,000, never the evaluation's). The sentencepiece model is
trained first on the world's text (seed 3,000,000). The shipped weights are the moving
average of the trained ones, in float16.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from evaluate import evaluate  # noqa: E402
from objectives import losses  # noqa: E402

from vlserve.engine.images import CropProcessor  # noqa: E402
from vlserve.families.beit3.config import Beit3Config  # noqa: E402
from vlserve.families.beit3.engine import MEAN, STD  # noqa: E402
from vlserve.families.beit3.loader import SPM, save_beit3  # noqa: E402
from vlserve.families.beit3.model import Beit3Model  # noqa: E402
from vlserve.families.beit3.tokenizer import PAD, Beit3Tokenizer  # noqa: E402
from vlserve.shapes import ANSWERS, false_caption, generate, questions, render, sample_scene  # noqa: E402
from vlserve.shapes.evaluation import validate  # noqa: E402
from vlserve.shapes.training import (Ema, adamw, add_run_args, resume, start, sincos_2d,  # noqa: E402
                                    train, train_sentencepiece)

TRAIN_SEED_BASE = 1_000_000
SPM_SEED = 3_000_000
TEXT_POSITIONS = 34  # 32 text tokens: <s> + at most 13 pieces + </s>, with room


def train_spm(path: Path, vocab_size: int = 128) -> Path:
    """BPE pieces over the world's captions, questions and answers (128: every word one piece)."""
    lines = []
    for scene, qas in generate(2000, SPM_SEED):
        lines += [scene.caption] + [q.question for q in qas] + [q.answer for q in qas]
    return train_sentencepiece(path, lines, vocab_size)


def make_config(args, vocab: int) -> Beit3Config:
    return Beit3Config(width=args.width, heads=args.width // 32, layers=args.layers, ffn=4 * args.width,
                       vocab_size=vocab, image_size=args.image_size, patch_size=args.patch_size,
                       text_positions=TEXT_POSITIONS, retrieval=True, answers=len(ANSWERS), caption=True)


@torch.no_grad()
def init_weights(model: Beit3Model, seed: int) -> None:
    """unilm's init (truncated normal 0.02 for linears, LayerNorms at one), torchscale's sub-LN
    scaling of fc1/fc2/out_proj/v_proj, and fixed 2-D sine-cosine patch positions."""
    g = torch.Generator().manual_seed(seed)
    layers = model.config.layers
    for name, p in model.named_parameters():
        if p.dim() == 0:
            continue
        if p.dim() == 1 and ("norm" in name or "_ln" in name or name.startswith("head.1")):
            p.fill_(1.0) if name.endswith("weight") else p.zero_()
        elif p.dim() == 1 or name.endswith("bias"):
            p.zero_()
        else:
            torch.nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04, generator=g)
            if any(k in name for k in ("fc1", "fc2", "out_proj", "v_proj")):
                p.mul_((torch.log(torch.tensor(2.0 * layers))).sqrt())
    table = model.beit3.encoder.embed_positions.A.weight
    table.zero_()
    table[3:] = sincos_2d(model.config.grid, model.config.width)  # row 2 is the class token's
    model.logit_scale.fill_(torch.log(torch.tensor(1 / 0.07)))


@dataclass
class Batch:
    pixels: torch.Tensor
    texts: torch.Tensor  # captions (B), then the false ones (B * K)
    questions: torch.Tensor
    answers: torch.Tensor


def _ids(tok: Beit3Tokenizer, texts: list[str]) -> torch.Tensor:
    return tok.encode_batch(texts)[0]


def make_batch(step: int, args, tok: Beit3Tokenizer, processor: CropProcessor) -> Batch:
    rng = random.Random(TRAIN_SEED_BASE * (args.seed + 1) + step)
    scenes = [sample_scene(rng, args.two_prob) for _ in range(args.batch)]
    false = [false_caption(s, rng) for s in scenes for _ in range(args.negatives)]
    qa = [rng.choice(questions(s, rng)) for s in scenes]
    return Batch(processor([render(s) for s in scenes]), _ids(tok, [s.caption for s in scenes] + false),
                 _ids(tok, [q.question for q in qa]), torch.tensor([ANSWERS.index(q.answer) for q in qa]))


def export(model: Beit3Model, folder: Path, spm: Path) -> Path:
    save_beit3(model, folder, answers=ANSWERS, spm=spm, dtype=torch.float16)
    if folder.resolve() != HERE:
        shutil.copy(HERE / "model.toml", folder / "model.toml")
    return folder


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p, workdir=Path("/tmp/beit3-toy-run"), out=HERE, steps=6000)
    p.add_argument("--layers", type=int, default=6)
    args = p.parse_args(argv)

    tuner = start(args)
    spm = args.workdir / SPM
    if not spm.is_file():
        train_spm(spm)
    tok = Beit3Tokenizer(spm, TEXT_POSITIONS - 2)
    config = make_config(args, tok.vocab_size)
    model = Beit3Model(config)
    init_weights(model, args.seed)
    ema = Ema(model, args.ema)
    opt = adamw(model, args, embeddings="embed")
    processor = CropProcessor(size=config.image_size, mean=MEAN, std=STD, resize_mode="squash")
    step, spent, _ = resume(args, model, opt, ema)
    n_params = sum(t.numel() for t in model.state_dict().values())
    print(f"params {n_params / 1e6:.2f}M, vocabulary {tok.vocab_size}; {json.dumps(vars(args), default=str)}",
          flush=True)
    train(args, model, opt, ema, tuner, step, spent,
          lambda step: losses(model, make_batch(step, args, tok, processor), tok.mask_id, PAD),
          validate=lambda folder: validate(evaluate, folder, args.val_n),
          export=lambda m, folder: export(m, folder, spm),
          log_fields=lambda: {"scale": round(model.logit_scale.detach().exp().item(), 2)})


if __name__ == "__main__":
    main()
