"""Step kernel_bench: bench/kernels.py, our Triton kernels vs every SDPA backend, case by case,
and issue 19's kernel targets from its records."""

from __future__ import annotations

import argparse
import json

from .core import RESERVE_S, TARGETS, Ctx, load_bench, slug, step


def kernel_targets(records: list[dict]) -> dict:
    """Issue 19's kernel targets from bench/kernels.py's records."""
    out = {}
    for r in records:
        ours = r["ms"].get("triton")
        sdpa = {k: t for k, t in r["ms"].items() if k.startswith("sdpa") and isinstance(t, float)}
        if not isinstance(ours, float) or not sdpa:
            continue
        best = min(sdpa, key=sdpa.get)
        row = {"triton_ms": ours, "best_sdpa": best, "best_sdpa_ms": sdpa[best], "x_best_sdpa": sdpa[best] / ours}
        if "pct_copy_bw" in r:
            row["pct_copy_bw"] = r["pct_copy_bw"].get("triton")
        else:
            row["tflops"] = r["tflops"].get("triton")
        if r["case"].startswith("vit_"):
            row["target"] = f"x_best_sdpa >= {TARGETS['prefill_x_best_sdpa']}"
            row["met"] = row["x_best_sdpa"] >= TARGETS["prefill_x_best_sdpa"]
        elif r["case"].startswith("decode_cross"):
            row["target"] = f"x_best_sdpa >= {TARGETS['decode_cross_x_sdpa']}, " \
                            f"pct_copy_bw >= {TARGETS['decode_cross_pct_copy_bw']}"
            row["met"] = (row["x_best_sdpa"] >= TARGETS["decode_cross_x_sdpa"]
                          and (row["pct_copy_bw"] or 0) >= TARGETS["decode_cross_pct_copy_bw"])
        out[f"{r['case']}/{r['dtype']}"] = row
    return out


@step("kernel_bench", 100, 60, 60, kernels=True)
def step_kernel_bench(ctx: Ctx) -> None:
    import torch

    if not ctx.smoke and not torch.cuda.is_available():
        raise RuntimeError("bench/kernels.py needs a CUDA device")
    kb = load_bench("kernels", "bench_kernels")
    # Its --dry-run: CPU, interpreter, tiny shapes, fp16 (bf16 dot is wrong under the interpreter).
    dtypes = "float16" if ctx.smoke else ("bfloat16" if ctx.mode == "quick" else "float16,bfloat16")
    args = argparse.Namespace(dry_run=ctx.smoke, dtypes=dtypes)
    cases = [c for c in kb.CASES if not (ctx.smoke and c.kind in kb.CUDA_ONLY)]
    payload, records, skipped, failed = None, [], [], {}
    name = "cpu-interpreter"
    # One case per run(): results saved case by case, and the budget checked between cases.
    for case in cases:
        if ctx.left() < RESERVE_S + 5:
            skipped.append(case.name)
            continue
        kb.CASES = [case]
        try:
            part = kb.run(args)
        except Exception as e:  # noqa: BLE001 - the other cases still run
            failed[case.name] = f"{type(e).__name__}: {str(e)[:300]}"
            ctx.put("cases_failed", failed)
            print(f"{case.name}: {failed[case.name]}", flush=True)
            continue
        records += part["results"]
        if payload is None:
            payload = part
            name = slug(part["machine"]["gpu"])
        payload["results"] = records
        (ctx.out_dir / f"kernels-{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
        ctx.put("targets", kernel_targets(records))
        ctx.put("copy_bandwidth_gbs", payload["copy_bandwidth_gbs"])
    print(kb.summary_table(records), flush=True)
    ctx.put("dtypes", dtypes)
    ctx.put("cases_run", len(records))
    ctx.put("cases_skipped_for_budget", skipped)
    ctx.put("file", f"kernels-{name}.json")
