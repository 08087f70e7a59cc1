"""Mixed load: does either kind of work starve the other? One `vlserve serve` with a random
BLIP-base (vision, ITC projections, captioning decoder). Caption clients (vision + 20 decode
steps each) and embedding clients (vision only) send requests back to back, first each kind
alone, then both at once. The worker alternates encoder batches and decode steps, and
preprocessing runs in a pool beside it. If neither starves, each kind's p99 under mixed load
stays within its throughput share, not unbounded.

    python bench/mixed_load.py [--caption-clients 8] [--embed-clients 4] [--seconds 60] [--threads 2]
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


async def clients(url: str, kinds: dict[str, int], seconds: float, images: list[str]) -> dict:
    """kinds: {"caption": n, "embed": m} clients, each looping until `seconds` have passed."""
    lat: dict[str, list[float]] = {k: [] for k, n in kinds.items() if n}
    stop = time.perf_counter() + seconds

    async def loop(kind: str, c: int, http: httpx.AsyncClient):
        k = c
        while time.perf_counter() < stop:
            image = images[k % len(images)]
            k += 7
            if kind == "caption":
                path, body = "/v1/caption", {"images": [image], "max_new_tokens": 20, "min_new_tokens": 20}
            else:
                path, body = "/v1/embeddings", {"images": [image]}
            t0 = time.perf_counter()
            r = await http.post(url + path, json=body)
            r.raise_for_status()
            lat[kind].append(time.perf_counter() - t0)

    async with httpx.AsyncClient(timeout=3600, limits=httpx.Limits(max_connections=64)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(loop(kind, c, http) for kind, n in kinds.items() for c in range(n)))
        elapsed = time.perf_counter() - t0
    out = {}
    for kind, xs in lat.items():
        xs.sort()
        out[kind] = {"requests": len(xs), "throughput_rps": len(xs) / elapsed, "p50_s": statistics.median(xs),
                     "p99_s": xs[min(len(xs) - 1, int(0.99 * len(xs)))]}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--caption-clients", type=int, default=8)
    ap.add_argument("--embed-clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    repo = Path(tempfile.gettempdir()) / "vlserve-bench-mixed-repo"
    components = Components(text_encoder=True, projections=True, text_decoder=True)
    folder = random_blip_folder(repo / "blip-base-union", "base", components)
    (folder / "model.toml").write_text("[batching]\nmax_batch_size = 32\nmax_queue_delay_ms = 10\n")
    # 64 distinct images and the cache off: every request runs its vision pass
    images = [image_b64(i) for i in range(64)]
    env = {"OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT / "server"), "VLSERVE_IMAGE_CACHE_BYTES": "0"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "vlserve.cli", "serve", "--model-repo", str(repo), "--port", str(port),
                  "--log-level", "warning"], url, env)
    phases = {"embed_alone": {"embed": args.embed_clients},
              "caption_alone": {"caption": args.caption_clients},
              "mixed": {"caption": args.caption_clients, "embed": args.embed_clients}}
    results = {}
    try:
        asyncio.run(clients(url, {"caption": 1, "embed": 1}, 5, images))  # warm-up
        for name, kinds in phases.items():
            results[name] = asyncio.run(clients(url, kinds, args.seconds, images))
            for kind, r in results[name].items():
                print(f"{name:14} {kind:8} {r['requests']:4} req {r['throughput_rps']:6.2f} req/s  "
                      f"p50 {r['p50_s']:6.2f}s  p99 {r['p99_s']:6.2f}s", flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    path = save("mixed_load-base-cpu", {"benchmark": "mixed_load", "config": vars(args), "machine": machine(),
                                         "results": results}, args.out)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
