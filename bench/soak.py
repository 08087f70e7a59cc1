"""Soak test: does `vlserve serve` stay flat under hours-long mixed load?

Phase 1 measures capacity (2xx requests/s) with --concurrency closed-loop clients for
--calibrate-s. Phase 2 sends an open-loop Poisson load at --load x capacity for --minutes
with every task mixed, and every --sample-s samples the server process's RSS, open fds
and threads (/proc) with the latency percentiles, throughput and status counts of the
requests that finished in that window. Saves JSON (samples, verdict) and a PNG plot.

    python bench/soak.py [--minutes 30] [--load 0.7] [--calibrate-s 60] [--sample-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from importlib import metadata
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "server"))

from vlserve.shapes import generate, render  # noqa: E402  (pure numpy/PIL: no torch in the client)

# task -> weight; caption dominates as it would in a real deployment
MIX = {"caption": 3, "caption_beam3": 1, "embeddings": 2, "score": 2, "rank": 1, "vqa": 2, "capfilt": 1}
# "flat": last-third median vs first-third median of the samples after the first (warm-up)
RSS_REL_SLACK, FD_SLACK, THREAD_SLACK = 0.10, 8, 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> dict:
    # bench/common.py's facts, without importing torch into the load generator
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    for pkg in ("torch", "httpx", "vlserve"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return info


def proc_stats(pid: int) -> dict:
    status = {k: v.strip() for k, _, v in (line.partition(":") for line in open(f"/proc/{pid}/status"))}
    return {"rss_mib": int(status["VmRSS"].split()[0]) / 1024, "threads": int(status["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def scenes(n: int, seed: int) -> list[dict]:
    out = []
    for scene, qas in generate(n, seed):
        buf = io.BytesIO()
        render(scene).save(buf, format="PNG")
        out.append({"png": buf.getvalue(), "b64": base64.b64encode(buf.getvalue()).decode(),
                    "caption": scene.caption, "question": qas[0].question})
    return out


def build(task: str, rng: random.Random, pool: list[dict]) -> tuple[str, dict]:
    """(path, httpx kwargs): half multipart, half base64 JSON (capfilt is JSON only: nested texts)."""
    s, other = rng.sample(pool, 2)
    texts = [s["caption"], other["caption"]]
    if task in ("caption", "caption_beam3"):
        path, fields, image_field = "/v1/caption", {"num_beams": 3 if task == "caption_beam3" else 1}, "images"
    elif task == "embeddings":
        path, fields, image_field = "/v1/embeddings", {"texts": [s["caption"]]}, "images"
    elif task == "score":
        path, fields, image_field = "/v1/retrieval/score", {"texts": texts, "heads": ["itc", "itm"]}, "images"
    elif task == "rank":
        cands = texts + [c["caption"] for c in rng.sample(pool, 2)]
        path, fields, image_field = "/v1/retrieval/rank", {"candidate_texts": cands, "top_k": 2}, "query_image"
    elif task == "vqa":
        path, fields, image_field = "/v1/vqa", {"questions": [s["question"]]}, "images"
    elif task == "capfilt":
        body = {"images": [s["b64"]], "texts": [texts], "num_synthetic": 2, "seed": rng.randrange(1 << 30)}
        return "/v1/capfilt", {"json": body}
    else:
        raise ValueError(task)
    if rng.random() < 0.5:
        data = {k: [str(x) for x in v] if isinstance(v, list) else str(v) for k, v in fields.items()}
        return path, {"data": data, "files": [(image_field, ("scene.png", s["png"], "image/png"))]}
    image = s["b64"] if image_field == "query_image" else [s["b64"]]
    return path, {"json": {image_field: image, **fields}}


class Recorder:
    def __init__(self):
        self.done: list[tuple[float, float, str, str]] = []  # (finished, latency_s, task, status)

    async def send(self, http: httpx.AsyncClient, url: str, task: str, path: str, kw: dict, t0: float):
        # t0 is the intended start: in open loop a wait for a pooled connection counts as latency
        try:
            r = await http.post(url + path, **kw)
            status = str(r.status_code)
            if r.status_code == 200 and "model" not in r.json():
                status = "200_bad_body"
        except httpx.HTTPError as e:
            status = f"conn_{type(e).__name__}"
        self.done.append((time.perf_counter(), time.perf_counter() - t0, task, status))


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def calibrate(url: str, args, pool, rec: Recorder) -> float:
    rng = random.Random(args.seed)
    tasks, weights = list(MIX), list(MIX.values())
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        for task in MIX:  # warm-up: first call of each graph/route
            await rec.send(http, url, task, *build(task, rng, pool), time.perf_counter())
        rec.done.clear()
        end = time.perf_counter() + args.calibrate_s

        async def client():
            while time.perf_counter() < end:
                task = rng.choices(tasks, weights)[0]
                await rec.send(http, url, task, *build(task, rng, pool), time.perf_counter())

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - t0
    ok = sum(s == "200" for *_, s in rec.done)
    return ok / elapsed


async def soak(url: str, pid: int, rate: float, args, pool, rec: Recorder) -> list[dict]:
    rng = random.Random(args.seed + 1)
    tasks, weights = list(MIX), list(MIX.values())
    samples, inflight = [], set()
    # bounded connections; requests beyond them wait in httpx's pool (counted in latency)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120, pool=None), limits=limits) as http:
        start = time.perf_counter()
        end, next_sample, next_arrival, seen = start + args.minutes * 60, start + args.sample_s, start, 0
        while True:
            now = time.perf_counter()
            if now >= next_sample:
                window = rec.done[seen:]
                seen = len(rec.done)
                lat = [d[1] for d in window if d[3] == "200"]
                samples.append({"t_min": (now - start) / 60, **proc_stats(pid), "finished": len(window),
                                "throughput_rps": sum(d[3] == "200" for d in window) / args.sample_s,
                                "p50_s": pct(lat, 0.5), "p90_s": pct(lat, 0.9), "p99_s": pct(lat, 0.99),
                                "statuses": dict(Counter(d[3] for d in window)), "in_flight": len(inflight)})
                s = samples[-1]
                print(f"  t={s['t_min']:5.1f} min rss {s['rss_mib']:7.1f} MiB fds {s['fds']:4} "
                      f"threads {s['threads']:3} {s['throughput_rps']:5.2f} req/s p99 {fmt(s['p99_s'])} "
                      f"{s['statuses']}", flush=True)
                next_sample += args.sample_s
                if next_sample > end + 1e-6:
                    break
            if now >= end:  # stop arriving; keep sampling until the last window closes
                await asyncio.sleep(max(0.0, next_sample - now))
                continue
            if now >= next_arrival:
                task = rng.choices(tasks, weights)[0]
                t = asyncio.create_task(rec.send(http, url, task, *build(task, rng, pool), next_arrival))
                inflight.add(t)
                t.add_done_callback(inflight.discard)
                next_arrival += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, min(next_arrival, next_sample, end) - time.perf_counter()))
        for t in inflight:  # the soak is over: stragglers are not counted
            t.cancel()
        await asyncio.gather(*inflight, return_exceptions=True)
    return samples


def fmt(x: float | None) -> str:
    return "   -  " if x is None else f"{x:6.3f}s"


def verdict(samples: list[dict]) -> dict:
    rest = samples[1:]
    k = max(1, len(rest) // 3)
    out = {"definition": (f"samples after the first; last-third median vs first-third median: RSS within "
                          f"{RSS_REL_SLACK:.0%}, fds within {FD_SLACK}, threads within {THREAD_SLACK}")}
    if len(rest) < 2:
        return {**out, "flat": None, "reason": "need at least 3 samples"}
    for key, slack, rel in (("rss_mib", RSS_REL_SLACK, True), ("fds", FD_SLACK, False),
                            ("threads", THREAD_SLACK, False)):
        first = statistics.median(s[key] for s in rest[:k])
        last = statistics.median(s[key] for s in rest[-k:])
        allowed = slack * first if rel else slack
        out[key] = {"first_third_median": first, "last_third_median": last, "max": max(s[key] for s in rest),
                    "flat": abs(last - first) <= allowed}
    out["flat"] = all(out[k]["flat"] for k in ("rss_mib", "fds", "threads"))
    return out


def plot(samples: list[dict], path: Path, title: str) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib missing: pip install matplotlib for the plot (JSON saved anyway)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    t = [s["t_min"] for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
    for ax, key, label in zip(axes, ("rss_mib", "fds", "threads"), ("RSS (MiB)", "open fds", "threads")):
        ax.plot(t, [s[key] for s in samples], marker="o")
        ax.set_ylabel(label)
        lo, hi = min(s[key] for s in samples), max(s[key] for s in samples)
        pad = max(1.0, 0.1 * hi)  # don't let matplotlib blow up a flat line's noise
        ax.set_ylim(lo - pad, hi + pad)
        if key != "rss_mib":
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for q, style in (("p50_s", "o-"), ("p99_s", "s--")):
        axes[3].plot(t, [s[q] if s[q] is not None else float("nan") for s in samples], style, label=q[:3])
    axes[3].set_ylabel("latency (s)")
    axes[3].set_ylim(bottom=0)
    axes[3].legend()
    axes[3].set_xlabel("minutes into the soak")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def server_problems(log: Path) -> list[str]:
    keep = ("ERROR", "Traceback", "Exception", "WARNING")
    # readiness 503s while the model loads are expected: the startup poll
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if "/health/ready" not in ln]
    access_bad = [ln for ln in lines if '" 5' in ln or '" 4' in ln]  # uvicorn access lines with 4xx/5xx
    return [ln for ln in lines if any(k in ln for k in keep)] + access_bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--load", type=float, default=0.7, help="fraction of measured capacity")
    ap.add_argument("--calibrate-s", type=float, default=60)
    ap.add_argument("--sample-s", type=float, default=60)
    ap.add_argument("--concurrency", type=int, default=8, help="calibration clients; soak connection limit")
    ap.add_argument("--model-repo", default=str(ROOT / "model_repo"))
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"soak-{args.minutes:g}min"
    log_path = out_dir / f"{name}-server.log"
    pool = scenes(64, args.seed)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(log_path, "w")
    cmd = [sys.executable, "-m", "vlserve.cli", "serve", "--model-repo", args.model_repo, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "server")})
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early ({proc.returncode}), see {log_path}")
            try:
                if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready, see {log_path}")
            time.sleep(0.5)
        print(f"server pid {proc.pid} on {url}, model repo {args.model_repo}; log {log_path}", flush=True)

        rec = Recorder()
        capacity = asyncio.run(calibrate(url, args, pool, rec))
        cal_status = dict(Counter(d[3] for d in rec.done))
        cal_lat = [d[1] for d in rec.done if d[3] == "200"]
        print(f"capacity {capacity:.2f} req/s ({args.concurrency} closed-loop clients, {args.calibrate_s:g} s) "
              f"p50 {fmt(pct(cal_lat, 0.5))} p99 {fmt(pct(cal_lat, 0.99))} {cal_status}", flush=True)
        if capacity <= 0:
            raise RuntimeError(f"no successful request during calibration: {cal_status}")
        rate = args.load * capacity
        print(f"soak: {rate:.2f} req/s open loop for {args.minutes:g} min", flush=True)
        rec = Recorder()
        t0 = proc_stats(proc.pid)
        samples = asyncio.run(soak(url, proc.pid, rate, args, pool, rec))
        alive = proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()

    totals = Counter(d[3] for d in rec.done)
    per_task = {t: dict(Counter(d[3] for d in rec.done if d[2] == t)) for t in MIX}
    problems = server_problems(log_path)
    v = verdict(samples)
    v["errors"] = sum(n for s, n in totals.items() if s != "200")
    v["server_alive_at_end"] = alive
    v["ok"] = bool(v["flat"]) and v["errors"] == 0 and alive
    payload = {"benchmark": "soak", "machine": machine(), "settings": {**vars(args), "mix": MIX},
               "server": {"cmd": cmd, "log": str(log_path), "stats_before_soak": t0,
                          "log_problem_lines": problems[:200]},
               "capacity": {"rps": capacity, "statuses": cal_status, "p50_s": pct(cal_lat, 0.5),
                            "p99_s": pct(cal_lat, 0.99)},
               "load": {"fraction": args.load, "target_rps": rate},
               "totals": {"statuses": dict(totals), "per_task": per_task}, "samples": samples, "verdict": v}
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    png_path = out_dir / f"{name}.png"
    plot(samples, png_path, f"vlserve soak: {rate:.2f} req/s ({args.load:g} x {capacity:.2f}), {args.minutes:g} min")

    print(f"\n{'min':>5}{'RSS MiB':>9}{'fds':>5}{'thr':>5}{'req/s':>7}{'p50':>9}{'p90':>9}{'p99':>9}  statuses")
    for s in samples:
        print(f"{s['t_min']:5.1f}{s['rss_mib']:9.1f}{s['fds']:5}{s['threads']:5}{s['throughput_rps']:7.2f}"
              f"{fmt(s['p50_s']):>9}{fmt(s['p90_s']):>9}{fmt(s['p99_s']):>9}  {s['statuses']}")
    print(f"totals {dict(totals)}")
    for key in ("rss_mib", "fds", "threads"):
        if key in v:
            print(f"{key:8} first-third {v[key]['first_third_median']:8.1f} last-third "
                  f"{v[key]['last_third_median']:8.1f} flat={v[key]['flat']}")
    print(f"verdict: flat={v['flat']} errors={v['errors']} server_alive={alive} ok={v['ok']}")
    if problems:
        print(f"{len(problems)} server log lines with errors/warnings/4xx/5xx (first 20):")
        print("\n".join("  " + ln for ln in problems[:20]))
    print(f"-> {json_path}\n-> {png_path}")


if __name__ == "__main__":
    main()
