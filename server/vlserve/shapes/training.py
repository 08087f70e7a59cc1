"""What the toy models' training scripts share (model_repo/*/train.py): the learning-rate
schedule, a thread-count tuner for a shared 2-core machine, the weights' moving average,
atomic checkpoints and fixed 2-D patch positions. Not imported by the server."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
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
