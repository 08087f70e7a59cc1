"""Serving under load, same random-weight BLIP-base captioner, same machine, all measured in
this run: `vlserve serve` in float32 and with precision = "int8"; LitServe with transformers'
generate and its own dynamic batching (bench/litserve_server.py, the peer a user would pick);
a naive FastAPI + transformers server (one generate per request, one at a time). N concurrent
clients each send requests back to back; reports throughput and p50/p99 latency per N and
saves JSON.

    python bench/serve_load.py [--clients 1 8 32] [--tokens 20] [--threads 2] [--servers ...]
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


SERVERS = ("vlserve", "vlserve_int8", "vlserve_int8_onnx", "litserve", "naive")


def twin(folder: Path, repo: Path, toml: str) -> Path:
    """A model repository serving the same weights (symlinked) with another model.toml."""
    other = repo / folder.name
    other.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        if f.name != "model.toml" and not (other / f.name).exists():
            (other / f.name).symlink_to(f)
    (other / "model.toml").write_text(toml)
    return repo


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
    ap.add_argument("--servers", nargs="+", default=list(SERVERS))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.gettempdir())
    folder = random_blip_folder(tmp / "vlserve-bench-serve-repo" / "blip-base", "base", Components(text_decoder=True))
    batching = "[batching]\nmax_batch_size = 32\nmax_queue_delay_ms = 10\n"
    (folder / "model.toml").write_text(batching)
    int8_repo = twin(folder, tmp / "vlserve-bench-serve-repo-int8", 'precision = "int8"\n' + batching)
    # int8 with the vision encoder on ONNX Runtime
    onnx_repo = twin(folder, tmp / "vlserve-bench-serve-repo-int8-onnx",
                     'precision = "int8"\n[runtime]\nvision = "onnx"\n' + batching)
    images = [image_b64(i) for i in range(16)]
    # the images repeat every 16 requests: vlserve's image cache would skip their vision pass,
    # which the peers cannot; this benchmark measures the encoders and decoding, so it is off
    env = {"OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT / "server"), "VLSERVE_IMAGE_CACHE_BYTES": "0",
           "VLSERVE_ORT_INTRA_OP_THREADS": str(args.threads)}
    vlserve = [sys.executable, "-m", "vlserve.cli", "serve", "--port", "{port}", "--log-level", "warning",
               "--model-repo"]
    servers = {
        "vlserve": vlserve + [str(folder.parent)],
        "vlserve_int8": vlserve + [str(int8_repo)],
        "vlserve_int8_onnx": vlserve + [str(onnx_repo)],
        "litserve": [sys.executable, str(ROOT / "bench" / "litserve_server.py"), str(folder), "{port}",
                     str(args.threads)],
        "naive": [sys.executable, str(ROOT / "bench" / "naive_server.py"), str(folder), "{port}", str(args.threads)],
    }
    servers = {k: v for k, v in servers.items() if k in args.servers}
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
    base = "litserve" if "litserve" in results else "naive"
    ratios = {name: [{"clients": a["clients"], "throughput_ratio": a["throughput_rps"] / b["throughput_rps"],
                      "p99_ratio": a["p99_s"] / b["p99_s"]} for a, b in zip(runs, results[base])]
              for name, runs in results.items() if name != base}
    name = "serve_load-base-cpu" + ("" if set(args.servers) == set(SERVERS) else "-" + "-".join(args.servers))
    path = save(name, {"benchmark": "serve_load", "config": vars(args), "machine": machine(),
                                         "results": results, "baseline": base, f"vs_{base}": ratios}, args.out)
    print(f"{'clients':>8}" + "".join(f"{n + ' rps':>18}{'p99':>7}" for n in results) + f"   (x = vs {base})")
    for i, n_clients in enumerate(args.clients):
        cells = ""
        for name, runs in results.items():
            r = runs[i]
            x = f" {ratios[name][i]['throughput_ratio']:.2f}x" if name in ratios else "      "
            cells += f"{r['throughput_rps']:12.2f}{x}{r['p99_s']:7.2f}"
        print(f"{n_clients:8}{cells}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
