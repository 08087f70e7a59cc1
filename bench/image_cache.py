"""The image cache's gain on a repeated-image workload: one image, five questions (as a
playground user or a client asking several questions does), on a random BLIP-base VQA
model served by `vlserve serve` with the cache on (the default) and off, same run.

For each of K images a client sends five /v1/vqa requests about it one after another;
C such clients run at once. Reports requests/s and p50/p99 latency for both, and the
cache's hit/miss counters from /metrics.

    python bench/image_cache.py [--images 6] [--clients 1 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import ROOT, machine, random_blip_folder, save
from serve_load import free_port, image_b64, start

from vlserve.families.blip.model import Components

QUESTIONS = ["what is in the picture?", "what color is it?", "how many are there?", "is it large?",
             "where is it?"]


async def session(url: str, per_client: list[list[str]]) -> dict:
    """Each client asks the five questions about each of its own images, one request at a time."""
    latencies: list[float] = []

    async def client(images: list[str], http: httpx.AsyncClient):
        for image in images:
            for q in QUESTIONS:
                t0 = time.perf_counter()
                r = await http.post(url + "/v1/vqa", json={"images": [image], "questions": [q],
                                                           "max_new_tokens": 5, "min_new_tokens": 5})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(timeout=3600) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(images, http) for images in per_client))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {"clients": len(per_client), "requests": len(latencies), "seconds": elapsed,
            "throughput_rps": len(latencies) / elapsed, "p50_s": statistics.median(latencies),
            "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def cache_counters(url: str) -> dict:
    out = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        for name in ("hits", "misses"):
            if line.startswith(f"vlserve_image_cache_{name}_total{{"):
                out[name] = out.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=6, help="images per client")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    repo = Path(tempfile.gettempdir()) / "vlserve-bench-cache-repo"
    components = Components(text_encoder=True, text_encoder_cross=True, text_decoder=True, decoder_roles=("answer",))
    random_blip_folder(repo / "blip-base-vqa", "base", components)
    env = {"OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT / "server")}
    results = {}
    offset = 0
    for name, budget in (("cache_on", None), ("cache_off", "0")):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start([sys.executable, "-m", "vlserve.cli", "serve", "--model-repo", str(repo), "--port", str(port),
                      "--log-level", "warning"], url, {**env, **({"VLSERVE_IMAGE_CACHE_BYTES": budget} if budget
                                                                 else {})})
        try:
            asyncio.run(session(url, [[image_b64(10_000)]]))  # warm-up, on an image nobody else sends
            results[name] = []
            for n in args.clients:
                per_client = [[image_b64(offset + c * args.images + i) for i in range(args.images)] for c in range(n)]
                offset += n * args.images  # fresh images for every run: only repeats within a run can hit
                before = cache_counters(url)
                r = asyncio.run(session(url, per_client))
                r["cache"] = {k: v - before.get(k, 0) for k, v in cache_counters(url).items()}  # this run's
                results[name].append(r)
                print(f"{name:9} clients={n:2} {r['throughput_rps']:6.2f} req/s  p50 {r['p50_s']:5.2f}s  "
                      f"p99 {r['p99_s']:5.2f}s  cache {r['cache']}", flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
    gain = [{"clients": a["clients"], "throughput_ratio": a["throughput_rps"] / b["throughput_rps"],
             "p50_ratio": b["p50_s"] / a["p50_s"]} for a, b in zip(results["cache_on"], results["cache_off"])]
    path = save("image_cache-base-vqa-cpu", {"benchmark": "image_cache", "config": vars(args), "machine": machine(),
                                               "questions_per_image": len(QUESTIONS), "results": results,
                                               "cache_on_vs_off": gain}, args.out)
    for g in gain:
        print(f"clients={g['clients']}: {g['throughput_ratio']:.2f}x requests/s with the cache, "
              f"p50 {g['p50_ratio']:.2f}x lower")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
