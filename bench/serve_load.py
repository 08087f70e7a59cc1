"""Serving under load: `vlserve serve` vs a naive FastAPI + transformers server (one
generate per request, one at a time), same random-weight BLIP-base captioner, same
machine, measured in this run. N concurrent clients each send requests back to back;
reports throughput and p50/p99 latency per N and saves JSON.

    python bench/serve_load.py [--clients 1 8 32] [--tokens 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from common import ROOT, machine, random_blip_folder, save

from vlserve.families.blip.model import Components


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_b64(i: int) -> str:
    rng = np.random.default_rng(i)
    arr = (rng.random((384, 384, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


def start(cmd: list[str], url: str, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited with {proc.returncode}")
        time.sleep(0.5)
    proc.kill()
    raise TimeoutError(f"{cmd} did not become ready")


async def load(url: str, clients: int, per_client: int, tokens: int, images: list[str]) -> dict:
    latencies, errors = [], 0

    async def client(c: int, http: httpx.AsyncClient):
        nonlocal errors
        for k in range(per_client):
            body = {"images": [images[(c * per_client + k) % len(images)]], "max_new_tokens": tokens,
                    "min_new_tokens": tokens}
            t0 = time.perf_counter()
            r = await http.post(url + "/v1/caption", json=body)
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    async with httpx.AsyncClient(timeout=3600, limits=httpx.Limits(max_connections=clients + 4)) as http:
        await http.post(url + "/v1/caption", json={"images": [images[0]], "max_new_tokens": 2})  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {"clients": clients, "requests": len(latencies), "errors": errors, "seconds": elapsed,
            "throughput_rps": len(latencies) / elapsed, "p50_s": statistics.median(latencies),
            "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-requests", type=int, default=16)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    repo = Path(tempfile.gettempdir()) / "vlserve-bench-serve-repo"
    folder = random_blip_folder(repo / "blip-base", "base", Components(text_decoder=True))
    (folder / "model.toml").write_text("[batching]\nmax_batch_size = 32\nmax_queue_delay_ms = 10\n")
    images = [image_b64(i) for i in range(16)]
    env = {"OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT / "server")}
    servers = {
        "vlserve": [sys.executable, "-m", "vlserve.cli", "serve", "--model-repo", str(repo), "--port", "{port}",
                    "--log-level", "warning"],
        "naive": [sys.executable, str(ROOT / "bench" / "naive_server.py"), str(folder), "{port}", str(args.threads)],
    }
    results = {}
    for name, template in servers.items():
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start([part.replace("{port}", str(port)) for part in template], url, env)
        try:
            results[name] = []
            for n in args.clients:
                per_client = max(1, -(-max(args.min_requests, 3 * n) // n))
                r = asyncio.run(load(url, n, per_client, args.tokens, images))
                results[name].append(r)
                print(f"{name:8} clients={n:3} {r['throughput_rps']:6.2f} req/s  p50 {r['p50_s']:6.2f}s  "
                      f"p99 {r['p99_s']:6.2f}s  errors {r['errors']}", flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
    ratios = [{"clients": a["clients"], "throughput_ratio": a["throughput_rps"] / b["throughput_rps"],
               "p99_ratio": a["p99_s"] / b["p99_s"]} for a, b in zip(results["vlserve"], results["naive"])]
    path = save("serve_load-base-cpu", {"benchmark": "serve_load", "config": vars(args), "machine": machine(),
                                         "results": results, "vlserve_vs_naive": ratios}, args.out)
    print(f"{'clients':>8}{'vlserve rps':>13}{'naive rps':>11}{'ratio':>8}{'p99 vls':>9}{'p99 naive':>11}")
    for a, b, r in zip(results["vlserve"], results["naive"], ratios):
        print(f"{a['clients']:8}{a['throughput_rps']:13.2f}{b['throughput_rps']:11.2f}{r['throughput_ratio']:8.2f}"
              f"{a['p99_s']:9.2f}{b['p99_s']:11.2f}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
