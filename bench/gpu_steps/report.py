"""The suite's verdicts and its closing table: issue 19's targets met or missed, one line a
step, the captioning numbers, the targets."""

from __future__ import annotations

import collections
import json

from .core import TARGETS


def _summary(steps: dict, name: str) -> dict:
    return (steps.get(name) or {}).get("data", {}).get("summary") or {}


def targets_met(steps: dict) -> dict:
    """Issue 19's end-to-end and kernel targets, where measured (None: not measured)."""
    out = {}
    for arch, key in (("base", "blip_base_images_per_s"), ("large", "blip_large_images_per_s")):
        data = (steps.get(f"e2e_blip_{arch}") or {}).get("data", {})
        ms = data.get("measurements", {})
        best = max((r.get("images_per_s") or 0 for k, r in ms.items()
                    if k.startswith("vlserve/") and k.endswith("/beams1") and r.get("batch", 0) >= 64), default=0)
        out[f"blip_{arch} >= {TARGETS[key]} images/s (greedy)"] = \
            {"value": best or None, "met": (best >= TARGETS[key]) if best else None}
        s = _summary(steps, f"e2e_blip_{arch}")
        p50 = (s.get("vlserve") or {}).get("b1_greedy_p50_ms")
        out[f"blip_{arch} p50 <= {TARGETS['p50_ms']:.0f} ms (batch 1, greedy)"] = \
            {"value": p50, "met": (p50 <= TARGETS["p50_ms"]) if p50 else None}
        for beams in ("greedy", "beams3"):
            sp = (s.get("speedup") or {}).get(f"b64_{beams}")
            out[f"blip_{arch} >= {TARGETS['x_transformers_b64']:.0f}x transformers fp16 (b64, {beams})"] = \
                {"value": sp, "met": (sp >= TARGETS["x_transformers_b64"]) if sp else None}
    kt = (steps.get("kernel_bench") or {}).get("data", {}).get("targets", {})
    for key, row in kt.items():
        if "met" in row:
            out[f"kernel {key}: {row['target']}"] = {"value": row.get("x_best_sdpa"), "met": row["met"],
                                                    "pct_copy_bw": row.get("pct_copy_bw")}
    return out


def _f(x, fmt="{:.1f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else "-"


def table(suite: dict, gpu: str) -> str:
    steps = suite["steps"]
    lines = [f"gpu_suite on {gpu}  (mode {suite['suite']['mode']}, {suite['suite'].get('wall_s', 0):.0f} s)",
             f"{'step':<16}{'status':<9}{'wall s':>7}{'budget':>7}  result"]
    for n, rec in steps.items():
        d = rec.get("data", {})
        if rec["status"] not in ("ok",):
            res = (rec.get("error") or "").splitlines()[0][:90] if rec.get("error") else ""
        elif n == "env":
            v = d.get("versions", {})
            res = (f"{d.get('device', {}).get('gpu')}; torch {v.get('torch')}, triton {v.get('triton')}, "
                   f"transformers {v.get('transformers')}; engine imports {d.get('engine_path')}")
        elif n == "kernel_tests":
            c = d.get("counts", {})
            dt = ", ".join(f"{k} {v.get('passed', 0)}/{sum(v.values())}" for k, v in d.get("by_dtype", {}).items())
            res = (f"{c.get('passed', 0)} passed, {c.get('failed', 0)} failed, {c.get('error', 0)} errors, "
                   f"{c.get('skipped', 0)} skipped, {d.get('kernels_ran')} ({dt})")
        elif n == "kernel_bench":
            t = d.get("targets", {})
            res = f"{d.get('cases_run')} case/dtype rows, copy {_f(d.get('copy_bandwidth_gbs'), '{:.0f}')} GB/s; " + \
                  "; ".join(f"{k.split('/')[0]} {_f(r.get('x_best_sdpa'), '{:.2f}')}x"
                            for k, r in list(t.items())[:4])
        elif n.startswith("e2e"):
            ref = d.get("reference", {})
            res = f"vs {ref.get('name')} {ref.get('dtype', '')}" if "name" in ref else \
                f"reference unavailable: {str(ref.get('unavailable'))[:70]}"
        else:
            res = json.dumps(d)[:90]
        wall, budget = _f(rec.get("wall_s")), _f(rec.get("budget_s"), "{:.0f}")
        lines.append(f"{n:<16}{rec['status']:<9}{wall:>7}{budget:>7}  {res}")
    e2e = [(n, _summary(steps, n)) for n in steps if n.startswith("e2e") and _summary(steps, n)]
    if e2e:
        lines += ["", f"{'captioning':<27}{'greedy img/s':>13}{'beams3 img/s':>13}{'p50 greedy ms':>14}"
                      f"{'p50 beams3 ms':>14}   (images/s at batch b, p50 at batch 1)"]
        for n, s in e2e:
            b = s.get("big_batch")
            for impl, r in s.items():
                if not isinstance(r, dict) or impl == "speedup":
                    continue
                cells = [_f(r.get(f"b{b}_greedy_images_per_s")), _f(r.get(f"b{b}_beams3_images_per_s")),
                         _f(r.get("b1_greedy_p50_ms"), "{:.2f}"), _f(r.get("b1_beams3_p50_ms"), "{:.2f}")]
                lines.append(f"{n[4:] + ' ' + impl + f' b{b}':<27}{cells[0]:>13}{cells[1]:>13}{cells[2]:>14}"
                             f"{cells[3]:>14}")
            sp = s.get("speedup")
            if sp:  # p50 columns: the reference's latency over ours
                cells = [_f(sp.get(k), "{:.2f}x") for k in (f"b{b}_greedy", f"b{b}_beams3", "b1_greedy", "b1_beams3")]
                lines.append(f"{n[4:] + ' speed-up':<27}{cells[0]:>13}{cells[1]:>13}{cells[2]:>14}{cells[3]:>14}")
    met = suite.get("targets_met", {})
    measured = {k: v for k, v in met.items() if v["met"] is not None and not k.startswith("kernel ")}
    kernel = collections.defaultdict(list)  # one line per case, its dtypes side by side
    for k, v in met.items():
        if k.startswith("kernel ") and v["met"] is not None:
            case, _, rest = k[7:].partition("/")
            dtype, _, target = rest.partition(": ")
            bw = f", {v['pct_copy_bw']:.0f}% BW" if isinstance(v.get("pct_copy_bw"), float) else ""
            kernel[(case, target)].append((dtype, v["met"], f"{dtype} {_f(v['value'], '{:.2f}')}x{bw}"))
    if measured or kernel:
        lines += ["", "targets (issue 19):"]
        for k, v in measured.items():
            lines.append(f"  {'MET ' if v['met'] else 'miss'}  {k}: {_f(v['value'], '{:.2f}')}")
        for (case, target), rows in kernel.items():
            ok = all(m for _, m, _ in rows)
            lines.append(f"  {'MET ' if ok else 'miss'}  kernel {case} ({target}): " + "; ".join(t for *_, t in rows))
    elif suite["suite"]["mode"] == "smoke":
        lines += ["", "targets: not evaluated in the CPU smoke run"]
    return "\n".join(lines)
