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
import io
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from objectives import losses  # noqa: E402

from vlserve.engine.images import CropProcessor  # noqa: E402
from vlserve.families.beit3.config import Beit3Config  # noqa: E402
from vlserve.families.beit3.engine import MEAN, STD  # noqa: E402
from vlserve.families.beit3.loader import SPM, save_beit3  # noqa: E402
from vlserve.families.beit3.model import Beit3Model  # noqa: E402
from vlserve.families.beit3.tokenizer import PAD, Beit3Tokenizer  # noqa: E402
from vlserve.shapes import ANSWERS, CANVAS, false_caption, generate, questions, render, sample_scene  # noqa: E402
from vlserve.shapes.training import Ema, ThreadTuner, lr_at, save_state, sincos_2d  # noqa: E402

TRAIN_SEED_BASE = 1_000_000
SPM_SEED = 3_000_000
TEXT_POSITIONS = 34  # 32 text tokens: <s> + at most 13 pieces + </s>, with room


def train_spm(path: Path, vocab_size: int = 128) -> Path:
    """BPE pieces over the world's captions, questions and answers (128: every word one piece),
    with XLM-R's special layout (<unk> 0, <s> 1, </s> 2) so unilm's XLMRobertaTokenizer reads it."""
    import sentencepiece

    lines = []
    for scene, qas in generate(2000, SPM_SEED):
        lines += [scene.caption] + [q.question for q in qas] + [q.answer for q in qas]
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False,
        num_threads=1, minloglevel=2)
    path.write_bytes(out.getvalue())
    return path


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


def validate(folder: Path, n: int) -> dict:
    from evaluate import evaluate
    from vlserve.shapes.evaluation import VAL_SEED

    scores = evaluate(folder, n=n, seed=VAL_SEED)
    scores["caption_errors"] = scores["caption_errors"][:6]
    return scores


def export(model: Beit3Model, folder: Path, spm: Path) -> Path:
    save_beit3(model, folder, answers=ANSWERS, spm=spm, dtype=torch.float16)
    if folder.resolve() != HERE:
        shutil.copy(HERE / "model.toml", folder / "model.toml")
    return folder


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/beit3-toy-run"))
    p.add_argument("--out", type=Path, default=HERE, help="where the final weights go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-lr-ratio", type=float, default=0.02)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--two-prob", type=float, default=0.6)
    p.add_argument("--negatives", type=int, default=2)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--image-size", type=int, default=CANVAS)
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--val-n", type=int, default=200)
    p.add_argument("--max-steps-now", type=int, default=None, help="stop (resumable) after this many steps")
    args = p.parse_args(argv)

    tuner = ThreadTuner(args.threads)
    torch.manual_seed(args.seed)
    args.workdir.mkdir(parents=True, exist_ok=True)
    spm = args.workdir / SPM
    if not spm.is_file():
        train_spm(spm)
    tok = Beit3Tokenizer(spm, TEXT_POSITIONS - 2)
    config = make_config(args, tok.vocab_size)
    model = Beit3Model(config)
    init_weights(model, args.seed)
    ema = Ema(model, args.ema)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    processor = CropProcessor(size=config.image_size, mean=MEAN, std=STD, resize_mode="squash")

    ckpt = args.workdir / "state.pt"
    step, spent = 0, 0.0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["objectives"])
        opt.load_state_dict(state["opt"])
        step, spent = state["step"], state.get("spent_s", 0.0)
        ema.model.load_state_dict(state["ema"])
        print(f"resumed at step {step} ({spent / 60:.1f} min trained)", flush=True)
    n_params = sum(t.numel() for t in model.state_dict().values())
    print(f"params {n_params / 1e6:.2f}M, vocabulary {tok.vocab_size}; {json.dumps(vars(args), default=str)}",
          flush=True)

    log = (args.workdir / "progress.jsonl").open("a")
    stop_at = args.steps if args.max_steps_now is None else min(args.steps, step + args.max_steps_now)
    sums, t_log = {}, time.time()
    model.train()
    while step < stop_at:
        t0 = time.time()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        parts = losses(model, make_batch(step, args, tok, processor), tok.mask_id, PAD)
        loss = sum(parts.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(step)
        step += 1
        dt = time.time() - t0  # training time without pauses: a step 10x slower than usual was stopped meanwhile
        usual = spent / max(step - 1, 1) if step > 1 else dt
        spent += dt if dt < 10 * usual else usual
        tuner.after_step(step, dt)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        if step % args.log_every == 0:
            row = {"step": step, **{k: round(v / args.log_every, 4) for k, v in sums.items()},
                   "lr": round(lr_at(step, args), 6), "scale": round(model.logit_scale.detach().exp().item(), 2),
                   "steps_per_s": round(args.log_every / (time.time() - t_log), 3), "threads": tuner.current,
                   "trained_min": round(spent / 60, 1)}
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
            sums, t_log = {}, time.time()
        if step % args.ckpt_every == 0 or step == stop_at:
            save_state(ckpt, model, opt, step, {"spent_s": spent, "ema": ema.model.state_dict()})
        if step % args.val_every == 0 or step == args.steps:
            row = {"step": step, "val": validate(export(ema.model, args.workdir / "val", spm), args.val_n)}
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
            t_log = time.time()
    if step >= args.steps:
        export(ema.model, args.out, spm)
        print(f"done: {step} steps, {spent / 60:.1f} min; weights in {args.out}", flush=True)


if __name__ == "__main__":
    main()
