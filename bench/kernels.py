"""Benchmark the vlserve_kernels Triton kernels against torch baselines.

Needs a CUDA device. Each kernel is timed with triton.testing.do_bench
(median) next to torch SDPA with every backend that runs on the inputs
(flash, cuDNN, efficient, math) and a plain matmul-softmax, at BLIP shapes,
in fp16 and bf16. Decode is also reported as a percentage of the device's
copy bandwidth. Prints TFLOP/s and GB/s per measurement, a summary table
last, and saves every timing with the machine and versions as JSON.

    python bench/kernels.py [--out PATH] [--dtypes float16,bfloat16]
    python bench/kernels.py --dry-run   # CPU + TRITON_INTERPRET, tiny shapes, one run each
                                        # (CUDA_ONLY kinds are left out)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "attention" | "decode_cross" | "decode_self" | "decode_prefix"
    b: int     # batch (attention) or query rows R (decode)
    h: int
    lq: int    # attention query length; 1 for decode
    lk: int    # key length (decode: cache capacity)
    d: int
    causal: bool = False
    beams: int = 1  # decode_cross/_prefix: query rows sharing one KV (prefix) row
    lp: int = 0     # decode_prefix: shared prefix keys (image tokens) per KV row


CASES = [
    Case("vit_b16_384", "attention", 32, 12, 577, 577, 64),
    Case("vit_l16_384", "attention", 16, 16, 577, 577, 64),
    Case("text_causal", "attention", 64, 12, 32, 32, 64, causal=True),
    Case("cross_text_image", "attention", 64, 12, 32, 577, 64),
    *(Case(f"decode_cross_r{r}", "decode_cross", r, 12, 1, 577, 64, beams=3) for r in (64, 128, 256)),
    Case("decode_self_r64", "decode_self", 64, 12, 1, 40, 64),
    # BEiT-3 captioning: each beam's self cache plus its image's shared tokens.
    Case("decode_prefix_r64", "decode_prefix", 64, 12, 1, 40, 64, beams=3, lp=577),
]
# Left out of --dry-run, whose case list tests/kernels/test_bench.py pins.
CUDA_ONLY = {"decode_prefix"}


def shrink(case: Case) -> Case:
    """Tiny version of a case for --dry-run under the interpreter."""
    return Case(case.name, case.kind, min(case.b, 6), 2, min(case.lq, 9), min(case.lk, 37), case.d,
                case.causal, case.beams, min(case.lp, 37))


# ---- bookkeeping -------------------------------------------------------------

def visible_pairs(lq: int, lk: int, causal: bool) -> int:
    """(query, key) pairs a query sees; causal aligns the last query with the last key."""
    if not causal:
        return lq * lk
    return sum(min(lk, max(0, i + lk - lq + 1)) for i in range(lq))


def attention_flops(b: int, h: int, lq: int, lk: int, d: int, causal: bool) -> int:
    """QK^T and PV: two multiply-adds per (query, key, channel)."""
    return 4 * b * h * d * visible_pairs(lq, lk, causal)


def attention_bytes(b: int, h: int, lq: int, lk: int, d: int, elem: int) -> int:
    """Minimum traffic: read q, k, v once, write o once."""
    return elem * b * h * d * (2 * lq + 2 * lk)


def decode_bytes(rows: int, h: int, d: int, keys_read: int, elem: int) -> int:
    """q in, o out, plus K and V for `keys_read` distinct (KV row, key) pairs per head."""
    return elem * h * d * (2 * rows + 2 * keys_read)


def decode_rows(case: Case, lengths: torch.Tensor | None = None) -> tuple[int, int]:
    """(KV rows S, distinct keys read) for a decode case."""
    if case.kind == "decode_cross":
        s = math.ceil(case.b / case.beams)
        return s, s * case.lk
    own = int(lengths.sum()) if lengths is not None else case.b * case.lk
    if case.kind == "decode_prefix":
        s = math.ceil(case.b / case.beams)
        return case.b, s * case.lp + own
    return case.b, own


# ---- timing ------------------------------------------------------------------

def make_timer(dry_run: bool):
    if dry_run:
        def once(fn):
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        return once
    import triton.testing
    return lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def sdpa_backends():
    from torch.nn.attention import SDPBackend
    return {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION,
            "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION, "sdpa_math": SDPBackend.MATH}


def sdpa_with(backend, *args, **kw):
    from torch.nn.attention import sdpa_kernel
    def run():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(*args, **kw)
    return run


def matmul_softmax(q, k, v, mask=None):
    """The unfused baseline: scores materialised in the input dtype."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (.., Lq, Lk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def measure(timer, impls: dict) -> dict:
    """{impl: ms or error string}; a failing baseline does not stop the run."""
    out = {}
    for name, fn in impls.items():
        try:
            fn()  # compile / warm up, and surface errors here
            out[name] = timer(fn)
        except Exception as e:  # noqa: BLE001 - record why a baseline cannot run
            out[name] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    return out


# ---- cases -------------------------------------------------------------------

def attention_impls(case, dtype, device, gen):
    import vlserve_kernels as vk
    x = torch.randn(case.b, case.lq, 3, case.h, case.d, generator=gen).to(device, dtype)
    qkv = x.permute(2, 0, 3, 1, 4)  # (3, B, H, L, D): the engine's packed projection
    q = qkv[0]
    if case.lq == case.lk:
        k, v = qkv[1], qkv[2]
    else:
        k, v = torch.randn(2, case.b, case.h, case.lk, case.d, generator=gen).to(device, dtype)
    causal_mask = None
    if case.causal:
        causal_mask = torch.ones(case.lq, case.lk, dtype=torch.bool, device=device).tril(case.lk - case.lq)
    impls = {"triton": lambda: vk.attention(q, k, v, causal=case.causal)}
    for name, backend in sdpa_backends().items():
        # is_causal is top-left aligned; the cases use it only with Lq == Lk.
        impls[name] = sdpa_with(backend, q, k, v, is_causal=case.causal)
    impls["matmul_softmax"] = lambda: matmul_softmax(q, k, v, causal_mask)
    flops = attention_flops(case.b, case.h, case.lq, case.lk, case.d, case.causal)
    nbytes = attention_bytes(case.b, case.h, case.lq, case.lk, case.d, x.element_size())
    return impls, flops, nbytes


def decode_impls(case, dtype, device, gen):
    import vlserve_kernels as vk
    rows, h, lk, d = case.b, case.h, case.lk, case.d
    q = torch.randn(rows, h, d, generator=gen).to(device, dtype)
    lengths = None
    if case.kind == "decode_cross":
        s, keys = decode_rows(case)
        k, v = torch.randn(2, s, h, lk, d, generator=gen).to(device, dtype)
        row_to_kv = (torch.arange(rows) // case.beams).to(device)
        impls = {"triton": lambda: vk.decode_attention(q, k, v, row_to_kv=row_to_kv)}
        k_rows, v_rows = k[row_to_kv], v[row_to_kv]  # (R, H, Lk, D): one copy per beam
        q_grp = torch.zeros(s * case.beams, h, d, device=device, dtype=dtype)
        q_grp[:rows] = q
        q_grp = q_grp.view(s, case.beams, h, d).transpose(1, 2)  # (S, H, beams, D)
        for name, backend in sdpa_backends().items():
            impls[f"{name}_expanded"] = sdpa_with(backend, q[:, :, None], k_rows, v_rows)
            impls[f"{name}_grouped"] = sdpa_with(backend, q_grp, k, v)
        impls["matmul_softmax_expanded"] = lambda: matmul_softmax(q[:, :, None], k_rows, v_rows)
        seen = rows * lk
    elif case.kind == "decode_prefix":
        lengths = torch.randint(1, lk + 1, (rows,), generator=gen).to(device)
        _, keys = decode_rows(case, lengths)
        k, v = torch.randn(2, rows, h, lk, d, generator=gen).to(device, dtype)
        pk, pv = torch.randn(2, math.ceil(rows / case.beams), h, case.lp, d, generator=gen).to(device, dtype)
        row_to_prefix = (torch.arange(rows) // case.beams).to(device)
        impls = {"triton": lambda: vk.decode_attention(q, k, v, kv_lengths=lengths, prefix_k=pk,
                                                       prefix_v=pv, row_to_prefix=row_to_prefix)}
        # Baselines get prefix ++ own keys prebuilt per row; that copy is not timed.
        cat_k, cat_v = torch.cat([pk[row_to_prefix], k], 2), torch.cat([pv[row_to_prefix], v], 2)
        own = torch.arange(lk, device=device)[None, :] < lengths[:, None]
        valid = torch.cat([own.new_ones(rows, case.lp), own], 1)[:, None, None, :]  # (R, 1, 1, Lp + Lk)
        for name, backend in sdpa_backends().items():
            impls[f"{name}_concat"] = sdpa_with(backend, q[:, :, None], cat_k, cat_v, attn_mask=valid)
        impls["matmul_softmax_concat"] = lambda: matmul_softmax(q[:, :, None], cat_k, cat_v, valid)
        seen = rows * case.lp + int(lengths.sum())
    else:
        lengths = torch.randint(1, lk + 1, (rows,), generator=gen).to(device)
        _, keys = decode_rows(case, lengths)
        k, v = torch.randn(2, rows, h, lk, d, generator=gen).to(device, dtype)
        impls = {"triton": lambda: vk.decode_attention(q, k, v, kv_lengths=lengths)}
        valid = (torch.arange(lk, device=device)[None, :] < lengths[:, None])[:, None, None, :]  # (R, 1, 1, Lk)
        for name, backend in sdpa_backends().items():
            impls[name] = sdpa_with(backend, q[:, :, None], k, v, attn_mask=valid)
        impls["matmul_softmax"] = lambda: matmul_softmax(q[:, :, None], k, v, valid)
        seen = int(lengths.sum())
    flops = 4 * h * d * seen
    return impls, flops, decode_bytes(rows, h, d, keys, q.element_size())


def copy_bandwidth(timer, device, dry_run: bool) -> float:
    """GB/s of a large device-to-device copy (read + write counted)."""
    n = (1 << 16) if dry_run else (1 << 28)  # 1 GiB of fp32 on a GPU
    src = torch.empty(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * n * 4 / (ms * 1e-3) / 1e9


# ---- report ------------------------------------------------------------------

def machine(device) -> dict:
    import triton
    info = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "triton": triton.__version__, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                    sm_count=props.multi_processor_count, cuda=torch.version.cuda)
    else:
        info.update(gpu="cpu-interpreter")
    return info


def summary_table(records: list[dict]) -> str:
    """One row per case and dtype; speedup = best torch time / triton time."""
    lines = [f"{'case':<20} {'dtype':<9} {'triton ms':>10} {'best torch ms':>26} {'speedup':>8} {'triton':>16}"]
    for r in records:
        ours = r["ms"].get("triton")
        times = {k: t for k, t in r["ms"].items() if k != "triton" and isinstance(t, float)}
        best = min(times, key=times.get) if times else None
        if not isinstance(ours, float):
            lines.append(f"{r['case']:<20} {r['dtype']:<9} {'FAILED':>10}  {ours}")
            continue
        rate = (f"{r['pct_copy_bw']['triton']:.0f}% copy BW" if "pct_copy_bw" in r
                else f"{r['tflops']['triton']:.1f} TFLOP/s")
        best_s = f"{times[best]:.3f} {best}" if best else "n/a"
        speed = f"{times[best] / ours:.2f}x" if best else ""
        lines.append(f"{r['case']:<20} {r['dtype']:<9} {ours:>10.3f} {best_s:>26} {speed:>8} {rate:>16}")
    return "\n".join(lines)


def run(args) -> dict:
    device = torch.device("cpu" if args.dry_run else "cuda")
    timer = make_timer(args.dry_run)
    gen = torch.Generator().manual_seed(0)
    bw = copy_bandwidth(timer, device, args.dry_run)
    print(f"device copy bandwidth: {bw:.0f} GB/s")
    records = []
    for case in CASES:
        if args.dry_run and case.kind in CUDA_ONLY:
            continue
        case = shrink(case) if args.dry_run else case
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            build = attention_impls if case.kind == "attention" else decode_impls
            impls, flops, nbytes = build(case, dtype, device, gen)
            ms = measure(timer, impls)
            rec = {"case": case.name, "dtype": dtype_name, "shape": asdict(case), "flops": flops,
                   "bytes": nbytes, "ms": ms, "tflops": {}, "gbs": {}}
            for name, t in ms.items():
                if isinstance(t, float):
                    rec["tflops"][name] = flops / (t * 1e-3) / 1e12
                    rec["gbs"][name] = nbytes / (t * 1e-3) / 1e9
            if case.kind != "attention":
                rec["pct_copy_bw"] = {n: 100 * g / bw for n, g in rec["gbs"].items()}
            records.append(rec)
            for name, t in ms.items():
                txt = (f"{t:9.4f} ms {rec['tflops'][name]:7.2f} TFLOP/s {rec['gbs'][name]:8.1f} GB/s"
                       if isinstance(t, float) else t)
                print(f"{case.name:<20} {dtype_name:<9} {name:<26} {txt}")
    return {"machine": machine(device), "dry_run": args.dry_run, "copy_bandwidth_gbs": bw,
            "results": records}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON path (default bench/results/kernels-<gpu>.json)")
    parser.add_argument("--dtypes", default=None, help="comma list (default float16,bfloat16)")
    parser.add_argument("--dry-run", action="store_true",
                        help="run every case once at tiny sizes on the CPU under TRITON_INTERPRET")
    args = parser.parse_args(argv)
    if args.dry_run:
        # Before the kernels' lazy triton import: @triton.jit reads it then.
        os.environ["TRITON_INTERPRET"] = "1"
        # bf16 tl.dot is wrong under the interpreter (the wrapper refuses it).
        args.dtypes = args.dtypes or "float16"
    elif not torch.cuda.is_available():
        print("bench/kernels.py needs a CUDA device (none found); "
              "use --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    args.dtypes = args.dtypes or "float16,bfloat16"
    sys.path.insert(0, str(ROOT / "kernels"))  # also works without an installed package

    payload = run(args)
    gpu = payload["machine"]["gpu"].lower().replace(" ", "-").replace("/", "-")
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"kernels-{gpu}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nsaved {out}\n")
    print(summary_table(payload["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
