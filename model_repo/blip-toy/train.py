"""Train blip-toy: one small BLIP learning ITC, ITM, captioning and VQA jointly on the shapes world.

    nice -n 15 .venv/bin/python model_repo/blip-toy/train.py --workdir /tmp/blip-toy-run

Seeded and resumable: the state is saved to --workdir every --ckpt-every steps and a
rerun with the same --workdir continues from there (scenes are drawn per step from the
seed, so a resumed run sees the same data). At the end the weights go to --out in the
HuggingFace layout. Progress lines go to stdout and --workdir/progress.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data import CAPTION_LEN, make_batch  # noqa: E402
from objectives import BlipObjectives, init_weights  # noqa: E402

from vlserve.families.blip.saver import save_blip  # noqa: E402
from vlserve.engine.images import CLIP_MEAN, CLIP_STD, ImageProcessor  # noqa: E402
from vlserve.families.blip.tokenizer import BlipTokenizer, wordpiece_tokenizer  # noqa: E402
from vlserve.families.blip.config import BlipConfig, TextConfig, VisionConfig  # noqa: E402
from vlserve.families.blip.model import Blip, Components  # noqa: E402
from vlserve.shapes import CANVAS, vocabulary  # noqa: E402
from vlserve.shapes.training import Ema, ThreadTuner, lr_at, save_state  # noqa: E402

ALL = Components(text_encoder=True, text_encoder_cross=True, projections=True, itm_head=True,
                 text_decoder=True, decoder_roles=("answer", "caption"))


def make_config(args, vocab_size: int, tok) -> BlipConfig:
    w = args.width
    vision = VisionConfig(hidden_size=w, intermediate_size=4 * w, num_hidden_layers=args.vision_layers,
                          num_attention_heads=w // 32, image_size=args.image_size, patch_size=args.patch_size)
    # the decoder answers by cross-attending question states: text width == vision width
    text = TextConfig(vocab_size=vocab_size, hidden_size=w, encoder_hidden_size=w, intermediate_size=4 * w,
                      num_hidden_layers=args.text_layers, num_attention_heads=w // 32,
                      max_position_embeddings=32, pad_token_id=0, bos_token_id=tok.token_to_id("[DEC]"),
                      sep_token_id=tok.token_to_id("[SEP]"))
    return BlipConfig(vision=vision, text=text, image_text_hidden_size=args.embed_dim)


def export(model: Blip, tok, folder: Path, dtype: torch.dtype = torch.float16) -> Path:
    """The servable files: config.json, model.safetensors (float16), tokenizer, preprocessing."""
    copy = Blip(model.config, model.components)
    copy.load_state_dict(model.state_dict())
    copy.text_decoder.tie_weights()
    save_blip(copy.to(dtype), folder)
    tok.save(str(folder / "tokenizer.json"))
    size = model.config.vision.image_size
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "BlipImageProcessor", "do_resize": True, "do_rescale": True,
        "do_normalize": True, "do_convert_rgb": True, "resample": 3,
        "size": {"height": size, "width": size}, "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
        "rescale_factor": 1 / 255}, indent=2) + "\n")
    return folder


def param_groups(objectives: BlipObjectives, weight_decay: float):
    decay, no_decay = [], []
    for name, p in objectives.named_parameters():
        if not p.requires_grad or any(id(p) == id(q) for q in decay + no_decay):
            continue  # the tied LM weight is the word embedding
        (decay if p.dim() >= 2 and "embedding" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def validate(folder: Path, n: int) -> dict:
    from evaluate import VAL_SEED, evaluate

    scores = evaluate(folder, n=n, seed=VAL_SEED, full=False)
    scores["caption_errors"] = scores["caption_errors"][:6]
    return scores


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/blip-toy-run"))
    p.add_argument("--out", type=Path, default=HERE, help="where the final weights go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-lr-ratio", type=float, default=0.02)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--ema", type=float, default=0.999, help="decay of the weights' moving average")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--two-prob", type=float, default=0.6, help="share of two-object scenes (the hard ones)")
    p.add_argument("--negatives", type=int, default=2, help="false captions per image")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--vision-layers", type=int, default=6)
    p.add_argument("--text-layers", type=int, default=4)
    p.add_argument("--embed-dim", type=int, default=128)
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
    tok = wordpiece_tokenizer(vocabulary())
    config = make_config(args, tok.get_vocab_size(), tok)
    model = Blip(config, ALL)
    init_weights(model)
    objectives = BlipObjectives(model)
    ema = Ema(model, args.ema)
    opt = torch.optim.AdamW(param_groups(objectives, args.weight_decay), lr=args.lr, betas=(0.9, 0.98))
    btok = BlipTokenizer(tok, config.text)
    processor = ImageProcessor(size=config.vision.image_size)
    gen = torch.Generator().manual_seed(args.seed)

    ckpt = args.workdir / "state.pt"
    step, spent = 0, 0.0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        objectives.load_state_dict(state["objectives"])
        model.text_decoder.tie_weights()
        opt.load_state_dict(state["opt"])
        step, spent = state["step"], state.get("spent_s", 0.0)
        gen.set_state(state["gen"])
        ema.model.load_state_dict(state.get("ema", model.state_dict()))
        ema.model.text_decoder.tie_weights()
        print(f"resumed at step {step} ({spent / 60:.1f} min trained)", flush=True)
    n_params = sum(t.numel() for t in model.state_dict().values()) - config.text.vocab_size * config.text.hidden_size
    print(f"params {n_params / 1e6:.2f}M; {json.dumps(vars(args), default=str)}", flush=True)
    assert CAPTION_LEN <= config.text.max_position_embeddings

    log = (args.workdir / "progress.jsonl").open("a")
    stop_at = args.steps if args.max_steps_now is None else min(args.steps, step + args.max_steps_now)
    sums, t_log = {}, time.time()
    objectives.train()
    while step < stop_at:
        t0 = time.time()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        batch = make_batch(step, args.seed, args.batch, btok, processor, args.two_prob, args.negatives)
        losses = objectives(batch, gen)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objectives.parameters(), 1.0)
        opt.step()
        ema.update(step)
        step += 1
        # training time without pauses: a step 10x slower than usual was stopped (SIGSTOP) meanwhile
        dt = time.time() - t0
        usual = spent / max(step - 1, 1) if step > 1 else dt
        spent += dt if dt < 10 * usual else usual
        tuner.after_step(step, dt)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        if step % args.log_every == 0:
            rate = args.log_every / (time.time() - t_log)
            row = {"step": step, **{k: round(v / args.log_every, 4) for k, v in sums.items()},
                   "lr": round(lr_at(step, args), 6), "temp": round(float(objectives.temp), 4),
                   "steps_per_s": round(rate, 3), "threads": tuner.current, "trained_min": round(spent / 60, 1)}
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
            sums, t_log = {}, time.time()
        if step % args.ckpt_every == 0 or step == stop_at:
            save_state(ckpt, objectives, opt, step, {"gen": gen.get_state(), "spent_s": spent,
                                                           "ema": ema.model.state_dict()})
        if step % args.val_every == 0 or step == args.steps:
            scores = validate(export(ema.model, tok, args.workdir / "val"), args.val_n)
            row = {"step": step, "val": scores}
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
            t_log = time.time()
    if step >= args.steps:
        export(ema.model, tok, args.out)
        print(f"done: {step} steps, {spent / 60:.1f} min; weights in {args.out}", flush=True)


if __name__ == "__main__":
    main()
