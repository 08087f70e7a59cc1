"""Train coca-toy: a small CoCa learning the contrastive and captioning losses jointly on the
shapes world, saved in open_clip's layout (open_clip itself loads it).

    nice -n 15 .venv/bin/python model_repo/coca-toy/train.py --workdir /tmp/coca-toy-run

Seeded and resumable, as blip-toy's train.py: the state goes to --workdir every
--ckpt-every steps and a rerun with the same --workdir continues; scenes are drawn per step
from the seed (seeds >= 1,000,000, never the evaluation's). The shipped weights are the
moving average of the trained ones, in float16.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent

from vlserve.engine.images import CropProcessor  # noqa: E402
from vlserve.families.coca.config import CocaConfig, MultimodalConfig, TextConfig, VisionConfig  # noqa: E402
from vlserve.families.coca.loader import save_coca  # noqa: E402
from vlserve.families.coca.text import Coca  # noqa: E402
from vlserve.families.coca.tokenizer import ClipTokenizer  # noqa: E402
from vlserve.shapes import CANVAS, false_caption, render, sample_scene  # noqa: E402
from vlserve.shapes.training import Ema, ThreadTuner, lr_at, save_state  # noqa: E402

TRAIN_SEED_BASE = 1_000_000
CONTEXT = 20  # <start_of_text> + at most 10 words + <end_of_text>, with room


def make_config(args) -> CocaConfig:
    w = args.width
    return CocaConfig(
        embed_dim=w,
        vision=VisionConfig(image_size=args.image_size, patch_size=args.patch_size, width=w, layers=args.vision_layers,
                            head_width=32, attentional_pool=True, attn_pooler_queries=args.queries + 1,
                            attn_pooler_heads=w // 32),
        text=TextConfig(context_length=CONTEXT, vocab_size=49408, width=w, heads=w // 32, layers=args.text_layers,
                        embed_cls=True),
        multimodal=MultimodalConfig(context_length=CONTEXT, vocab_size=49408, width=w, heads=w // 32,
                                    layers=args.decoder_layers))


@torch.no_grad()
def init_weights(model: Coca, seed: int) -> None:
    """open_clip's initialisation scales (normal; LayerNorm at one; biases at zero)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() == 0:  # logit_scale, set below
            continue
        if p.dim() == 1 and ("ln" in name or "gamma" in name) and name.endswith(("weight", "gamma")):
            p.fill_(1.0)
        elif p.dim() == 1 or name.endswith("bias"):
            p.zero_() if "emb" not in name else p.normal_(0, 0.01, generator=g)
        elif "embedding" in name or name.endswith("query"):
            p.normal_(0, 0.02, generator=g)
        else:
            p.normal_(0, p.shape[-1] ** -0.5, generator=g)
    model.logit_scale.fill_(torch.log(torch.tensor(1 / 0.07)))


def make_batch(step: int, seed: int, size: int, tok: ClipTokenizer, processor: CropProcessor, two_prob: float,
               negatives: int):
    rng = random.Random(TRAIN_SEED_BASE * (seed + 1) + step)
    scenes = [sample_scene(rng, two_prob) for _ in range(size)]
    captions = [s.caption for s in scenes]
    false = [false_caption(s, rng) for s in scenes for _ in range(negatives)]
    return processor([render(s) for s in scenes]), tok.encode_batch(captions), tok.encode_batch(false)


def losses(model: Coca, pixels, ids, false_ids, pad_id: int, smoothing: float) -> dict[str, torch.Tensor]:
    """CoCa's two losses: contrastive (images against their captions and the near-miss false
    ones) and captioning (teacher-forced next token, padding ignored)."""
    latent, tokens = model.visual(pixels)
    img = F.normalize(latent, dim=-1)
    txt = F.normalize(model.text(torch.cat([ids, false_ids])), dim=-1)
    b = ids.shape[0]
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, B + B*K)
    target = torch.arange(b)
    contrastive = (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :b].T, target)) / 2
    out = model.teacher_forced(tokens, ids[:, :-1])  # (B, L - 1, V)
    caption = F.cross_entropy(out.reshape(-1, out.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=pad_id,
                              label_smoothing=smoothing)
    return {"contrastive": contrastive, "caption": 2.0 * caption}  # CoCa's weights: 1 and 2


def validate(folder: Path, n: int) -> dict:
    sys.path.insert(0, str(HERE))
    from evaluate import VAL_SEED, evaluate

    scores = evaluate(folder, n=n, seed=VAL_SEED)
    scores["caption_errors"] = scores["caption_errors"][:6]
    return scores


def export(model: Coca, folder: Path) -> Path:
    copy = Coca(model.config)
    copy.load_state_dict(model.state_dict())
    return save_coca(copy.half(), folder, {"size": model.config.vision.image_size, "resize_mode": "shortest",
                                            "interpolation": "bicubic"})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/coca-toy-run"))
    p.add_argument("--out", type=Path, default=HERE, help="where the final weights go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-lr-ratio", type=float, default=0.02)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--two-prob", type=float, default=0.6)
    p.add_argument("--negatives", type=int, default=2)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--vision-layers", type=int, default=6)
    p.add_argument("--text-layers", type=int, default=3)
    p.add_argument("--decoder-layers", type=int, default=3)
    p.add_argument("--queries", type=int, default=32, help="decoder tokens from the attentional pooler")
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
    config = make_config(args)
    model = Coca(config)
    init_weights(model, args.seed)
    ema = Ema(model, args.ema)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    tok = ClipTokenizer(CONTEXT)
    processor = CropProcessor(size=config.vision.image_size)

    ckpt = args.workdir / "state.pt"
    step, spent = 0, 0.0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["objectives"])
        opt.load_state_dict(state["opt"])
        step, spent = state["step"], state.get("spent_s", 0.0)
        ema.model.load_state_dict(state["ema"])
        print(f"resumed at step {step} ({spent / 60:.1f} min trained)", flush=True)
    vocab_params = 2 * config.text.vocab_size * config.text.width
    n_params = sum(t.numel() for t in model.state_dict().values())
    print(f"params {n_params / 1e6:.2f}M ({(n_params - vocab_params) / 1e6:.2f}M without the two vocabulary "
          f"matrices); {json.dumps(vars(args), default=str)}", flush=True)

    log = (args.workdir / "progress.jsonl").open("a")
    stop_at = args.steps if args.max_steps_now is None else min(args.steps, step + args.max_steps_now)
    sums, t_log = {}, time.time()
    model.train()
    while step < stop_at:
        t0 = time.time()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        pixels, ids, false_ids = make_batch(step, args.seed, args.batch, tok, processor, args.two_prob,
                                            args.negatives)
        parts = losses(model, pixels, ids, false_ids, tok.pad_id, args.smoothing)
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
                   "lr": round(lr_at(step, args), 6), "scale": round(float(model.logit_scale.exp()), 2),
                   "steps_per_s": round(args.log_every / (time.time() - t_log), 3), "threads": tuner.current,
                   "trained_min": round(spent / 60, 1)}
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
            sums, t_log = {}, time.time()
        if step % args.ckpt_every == 0 or step == stop_at:
            save_state(ckpt, model, opt, step, {"spent_s": spent, "ema": ema.model.state_dict()})
        if step % args.val_every == 0 or step == args.steps:
            row = {"step": step, "val": validate(export(ema.model, args.workdir / "val"), args.val_n)}
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
            t_log = time.time()
    if step >= args.steps:
        export(ema.model, args.out)
        print(f"done: {step} steps, {spent / 60:.1f} min; weights in {args.out}", flush=True)


if __name__ == "__main__":
    main()
