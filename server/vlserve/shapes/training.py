"""What the toy models' training scripts share (model_repo/*/train.py): their flags, the
resumable loop, the learning-rate schedule, a thread-count tuner for a shared 2-core
machine, the weights' moving average, atomic checkpoints, fixed 2-D patch positions and a
sentencepiece trainer. Not imported by the server."""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .world import CANVAS


def lr_at(step: int, args) -> float:
    """Linear warm-up, then cosine to --steps; with --restart-at R, a second warm-up and cosine
    run from step R (a warm restart of a resumed run)."""
    start = args.restart_at if args.restart_at is not None and step >= args.restart_at else 0
    step -= start
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - start - args.warmup)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


class ThreadTuner:
    """Two threads on an idle machine, one while another process holds a core: there a
    starved second thread stalls every parallel region and 2 threads run slower than 1.
    Every `every` steps, or when steps slow down by half, try the other count for a few
    steps and keep the faster."""

    def __init__(self, threads: int, every: int = 100, probe: int = 5):
        self.max, self.every, self.probe = threads, every, probe
        self.current, self.times, self.trial, self.reference = threads, [], None, None
        torch.set_num_threads(threads)

    def _median(self) -> float:
        return sorted(self.times)[self.probe // 2]

    def after_step(self, step: int, seconds: float) -> None:
        if self.max < 2:
            return
        self.times = (self.times + [seconds])[-self.probe:]
        if len(self.times) < self.probe:
            return
        if self.trial is None:
            if self.reference is None:
                self.reference = self._median()
            if step % self.every == 0 or self._median() > 1.5 * self.reference:
                self.trial = (self._median(), self.current, step)
                self._use(1 if self.current > 1 else self.max)
        elif step - self.trial[2] == self.probe + 1:  # the first step after a switch is not counted
            before, previous, _ = self.trial
            self.reference = min(before, self._median())
            if self._median() >= before:
                self._use(previous)
            self.trial = None

    def _use(self, threads: int) -> None:
        self.current = threads
        self.times = []
        torch.set_num_threads(threads)


class Ema:
    """An exponential moving average of the weights, which are what ship: late in training the
    raw weights still flip single attributes from one checkpoint to the next."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False)  # deepcopy keeps the LM weight tied
        self.pairs = list(zip(self.model.parameters(), model.parameters()))

    @torch.no_grad()
    def update(self, step: int) -> None:
        rate = 1 - min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_([e for e, _ in self.pairs], [p.detach() for _, p in self.pairs], rate)


def save_state(path: Path, objectives, opt, step: int, extra: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"objectives": objectives.state_dict(), "opt": opt.state_dict(), "step": step, **extra}, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-save leaves the previous checkpoint


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid * grid, dim) fixed 2D sine-cosine positions (MAE): half the channels encode the
    row, half the column, so "left of" and "above" are linear directions from the start."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")
    parts = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        angle = pos[:, None] * omega[None, :]  # (grid*grid, dim/4)
        parts += [angle.sin(), angle.cos()]
    out = torch.cat(parts, dim=1)
    return F.pad(out, (0, dim - out.shape[1])).float()


def train_sentencepiece(path: Path, texts: list[str], vocab_size: int, model_type: str = "bpe") -> Path:
    """A sentencepiece model with XLM-R's special layout (<unk> 0, <s> 1, </s> 2, no <pad>),
    which BEiT-3's tokenizer and unilm's XLMRobertaTokenizer read."""
    import io

    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=out, vocab_size=vocab_size, model_type=model_type,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False,
        num_threads=1, minloglevel=2)
    path.write_bytes(out.getvalue())
    return path


def adamw(module: torch.nn.Module, args, embeddings: str) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices but not on embeddings (names holding `embeddings`),
    biases and norms; tied weights count once (named_parameters lists them once)."""
    decay, rest = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and embeddings not in name else rest).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))


def add_run_args(p, *, workdir: Path, out: Path, steps: int) -> None:
    """The command-line flags every toy's train.py shares (its own model flags come beside)."""
    p.add_argument("--workdir", type=Path, default=workdir)
    p.add_argument("--out", type=Path, default=out, help="where the final weights go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-lr-ratio", type=float, default=0.02)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--restart-at", type=int, default=None,
                   help="a warm restart: from this step, a new warm-up and cosine to --steps")
    p.add_argument("--ema", type=float, default=0.999, help="decay of the weights' moving average")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--two-prob", type=float, default=0.6, help="share of two-object scenes (the hard ones)")
    p.add_argument("--negatives", type=int, default=2, help="false captions per image")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--val-n", type=int, default=200)
    p.add_argument("--max-steps-now", type=int, default=None, help="stop (resumable) after this many steps")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--image-size", type=int, default=CANVAS)
    p.add_argument("--patch-size", type=int, default=16)


def start(args) -> ThreadTuner:
    """Threads, the seed and the work folder, before the model is built."""
    tuner = ThreadTuner(args.threads)
    torch.manual_seed(args.seed)
    args.workdir.mkdir(parents=True, exist_ok=True)
    return tuner


def resume(args, objectives, opt, ema: Ema) -> tuple[int, float, dict]:
    """(step, minutes-free training seconds, the saved state) from --workdir, or a fresh start."""
    ckpt = args.workdir / "state.pt"
    if not ckpt.is_file():
        return 0, 0.0, {}
    state = torch.load(ckpt, weights_only=False)
    objectives.load_state_dict(state["objectives"])
    opt.load_state_dict(state["opt"])
    ema.model.load_state_dict(state["ema"])
    step, spent = state["step"], state.get("spent_s", 0.0)
    print(f"resumed at step {step} ({spent / 60:.1f} min trained)", flush=True)
    return step, spent, state


def train(args, objectives, opt, ema: Ema, tuner: ThreadTuner, step: int, spent: float, losses_at, *,
          validate, export, log_fields=dict, state_extra=dict) -> None:
    """The toys' loop: losses_at(step) -> {name: loss}; AdamW step with clipping, EMA update,
    a log row every --log-every steps (plus log_fields()), the state (plus state_extra())
    every --ckpt-every, validate(export(ema, workdir/val)) every --val-every, and the final
    export(ema, --out) once --steps are done."""
    log = (args.workdir / "progress.jsonl").open("a")
    stop_at = args.steps if args.max_steps_now is None else min(args.steps, step + args.max_steps_now)
    sums, t_log = {}, time.time()
    objectives.train()

    def write(row: dict) -> None:
        print(json.dumps(row), flush=True)
        log.write(json.dumps(row) + "\n")
        log.flush()

    while step < stop_at:
        t0 = time.time()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        parts = losses_at(step)
        opt.zero_grad(set_to_none=True)
        sum(parts.values()).backward()
        torch.nn.utils.clip_grad_norm_(objectives.parameters(), 1.0)
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
            write({"step": step, **{k: round(v / args.log_every, 4) for k, v in sums.items()},
                   "lr": round(lr_at(step, args), 6), **log_fields(),
                   "steps_per_s": round(args.log_every / (time.time() - t_log), 3), "threads": tuner.current,
                   "trained_min": round(spent / 60, 1)})
            sums, t_log = {}, time.time()
        if step % args.ckpt_every == 0 or step == stop_at:
            save_state(args.workdir / "state.pt", objectives, opt, step,
                       {"spent_s": spent, "ema": ema.model.state_dict(), **state_extra()})
        if step % args.val_every == 0 or step == args.steps:
            write({"step": step, "val": validate(export(ema.model, args.workdir / "val"))})
            t_log = time.time()
    if step >= args.steps:
        export(ema.model, args.out)
        print(f"done: {step} steps, {spent / 60:.1f} min; weights in {args.out}", flush=True)
