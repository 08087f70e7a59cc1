"""What the e2e steps share: the timing matrix, vlserve's caption task as a timed callable,
random pixels, the headline summary, and `compare`, which times vlserve against references."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .core import RESERVE_S, Ctx


class Matrix:
    """Times every implementation at every (beams, batch), most informative first: batch 64
    greedy, batch 1 greedy, then 3 beams; each measurement saved as it is taken."""

    def __init__(self, ctx: Ctx, impls: dict, sync):
        self.ctx, self.impls, self.sync = ctx, impls, sync  # impls: name -> make(batch, beams) -> fn
        self.results: dict = {}
        ctx.put("measurements", self.results)

    def plan(self) -> list[tuple[int, int, str]]:
        batches = sorted(self.ctx.cfg["batches"], reverse=True)
        return [(beams, b, name) for beams in (1, 3) for b in batches for name in self.impls]

    def run(self, extra: list[tuple[int, int, str]] = ()) -> dict:
        plan = self.plan() + list(extra)
        for i, (beams, batch, name) in enumerate(plan):
            key = f"{name}/b{batch}/beams{beams}"
            self.results[key] = self.measure(name, batch, beams, remaining=len(plan) - i)
            self.ctx.put("measurements", self.results)
        return self.results

    def timed(self, fn) -> float:
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def measure(self, name: str, batch: int, beams: int, remaining: int) -> dict:
        ctx, cfg = self.ctx, self.ctx.cfg
        if ctx.left() < RESERVE_S:
            return {"skipped": "step budget spent"}
        rec: dict = {"batch": batch, "beams": beams}
        try:
            fn, check = self.impls[name](batch, beams)
            rec["first_call_s"] = self.timed(fn)  # Triton JIT, cuDNN/cuBLAS heuristics, allocator
            t = rec["first_call_s"]
            for _ in range(cfg["warmup"] - 1):
                t = self.timed(fn)
            if check is not None:
                rec["new_tokens"] = check()  # both sides must do the same work
            share = (ctx.left() - RESERVE_S) / max(1, remaining)
            wanted = cfg["lat_runs"] if batch == 1 else cfg["reps"]
            n = max(1, min(wanted, int(share / max(t, 1e-4))))
            runs = [self.timed(fn) for _ in range(n)]
        except Exception as e:  # noqa: BLE001 - one failing measurement does not end the step
            rec["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            print(f"{name} b{batch} beams{beams}: {rec['error']}", flush=True)
            _free_cuda()
            return rec
        runs.sort()
        med = runs[len(runs) // 2] if len(runs) % 2 else sum(runs[len(runs) // 2 - 1:len(runs) // 2 + 1]) / 2
        rec.update(runs_s=[round(r, 6) for r in runs], median_s=med, p50_ms=med * 1e3,
                   p90_ms=runs[min(len(runs) - 1, int(0.9 * len(runs)))] * 1e3, images_per_s=batch / med)
        print(f"{name:<14} b{batch:<4} beams{beams}  {med * 1e3:9.2f} ms  {batch / med:9.1f} images/s  "
              f"({len(runs)} runs)", flush=True)
        return rec


def _free_cuda():
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def sync_fn(device: str):
    import torch

    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def e2e_summary(results: dict, ours: str, ref: str | None, big: int) -> dict:
    """Headline numbers: images/s at the big batch, p50 ms at batch 1, vlserve's speed-ups."""
    def get(name, batch, beams, field):
        r = results.get(f"{name}/b{batch}/beams{beams}", {})
        return r.get(field)
    out: dict = {"big_batch": big}
    for name in filter(None, (ours, ref)):
        out[name] = {f"b{big}_greedy_images_per_s": get(name, big, 1, "images_per_s"),
                     f"b{big}_beams3_images_per_s": get(name, big, 3, "images_per_s"),
                     "b1_greedy_p50_ms": get(name, 1, 1, "p50_ms"), "b1_beams3_p50_ms": get(name, 1, 3, "p50_ms")}
    if ref:
        sp = {}
        for batch in (big, 1):
            for beams in (1, 3):
                a, b = get(ours, batch, beams, "median_s"), get(ref, batch, beams, "median_s")
                sp[f"b{batch}_{'greedy' if beams == 1 else 'beams3'}"] = b / a if a and b else None
        out["speedup"] = sp
    return out


def caption_impl(model, loop, pixels_for, tokens: int):
    """vlserve's caption task (the Python API's path: DirectRunner, one event loop kept open)."""
    from vlserve.engine.generation.params import GenerationParams
    from vlserve.tasks.caption import caption

    def make(batch, beams):
        params = GenerationParams(max_new_tokens=tokens, min_new_tokens=tokens, num_beams=beams)
        px = pixels_for(batch)
        last = {}

        def fn():
            last["caps"] = loop.run_until_complete(caption(model, px, params=params))
        return fn, lambda: sorted({len(c[0].tokens) for c in last["caps"]})
    return make


def pixel_cache(size: int, device: str, dtype):
    import torch

    cache = {}

    def get(batch):
        if batch not in cache:
            g = torch.Generator().manual_seed(batch)
            cache[batch] = torch.randn(batch, 3, size, size, generator=g).to(device, dtype)
        return cache[batch]
    return get


def work_dir(name: str) -> Path:
    d = Path(tempfile.gettempdir()) / f"gpu-suite-{name}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def dtypes_for(ctx: Ctx):
    """vlserve in bf16; the references in fp16 on the GPU (as issue 19 asks), fp32 on the CPU."""
    import torch

    return torch.bfloat16, (torch.float32 if ctx.smoke else torch.float16)


def engine_options(ctx: Ctx):
    from vlserve.engine.family import EngineOptions

    return EngineOptions(device=ctx.device, dtype=str(dtypes_for(ctx)[0]).removeprefix("torch."))


def params_m(eng) -> float:
    return sum(p.numel() for p in eng.model.parameters()) / 1e6


def compare(ctx: Ctx, eng, size: int, references: dict, max_batch: int | None = None, extra=()) -> None:
    """Times vlserve's caption task on `eng` (images of `size` px) against `references` (name ->
    make(batch, beams)), then saves the summary; `extra`: (beams, batch, name) after the plan."""
    import asyncio

    from vlserve.scheduling.runner import DirectRunner
    from vlserve.tasks.models import TaskModel

    big = max(ctx.cfg["batches"])
    model = TaskModel("bench", DirectRunner(eng, max_batch or big), eng.capabilities)
    loop = asyncio.new_event_loop()
    pixels = pixel_cache(size, ctx.device, dtypes_for(ctx)[0])
    impls = {"vlserve": caption_impl(model, loop, pixels, ctx.cfg["tokens"]), **references}
    results = Matrix(ctx, impls, sync_fn(ctx.device)).run(extra)
    loop.close()
    ctx.put("summary", e2e_summary(results, "vlserve", next(iter(references), None), big))
