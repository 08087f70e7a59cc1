"""The real server in a subprocess: batching across concurrent clients, a client that
disconnects, and graceful shutdown on SIGTERM."""

import base64
import io
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from PIL import Image

from tests.api.test_batching import metric
from tests.e2e.server_process import ServerProcess


def img(i: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (40 + i, 40), ((50 * i) % 256, (90 * i) % 256, 120)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


SLOW = {"images": [img(i) for i in range(4)], "max_new_tokens": 47, "min_new_tokens": 47, "num_beams": 8}


def test_concurrent_clients_are_batched_and_answers_match(e2e_repo):
    # the image cache off: the solo runs must encode again to be compared with the batched ones
    with ServerProcess("--model-repo", str(e2e_repo), env={"VLSERVE_IMAGE_CACHE_BYTES": "0"}) as server:
        bodies = [{"images": [img(i)], "max_new_tokens": 10} for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda b: httpx.post(server.url + "/v1/caption", json=b, timeout=120), bodies))
        alone = [httpx.post(server.url + "/v1/caption", json=b, timeout=120) for b in bodies]
        assert all(r.status_code == 200 for r in together + alone)
        assert [r.json()["captions"][0][0]["tokens"] for r in together] == \
               [r.json()["captions"][0][0]["tokens"] for r in alone]
        text = server.metrics()
        # 16 requests, one image each: batches with more than one example must have formed
        assert metric(text, "vlserve_batch_size_sum", model="toy", graph="vision") == 16
        assert metric(text, "vlserve_batch_size_count", model="toy", graph="vision") < 16


def wait_in_flight(server, n=1, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(server.metrics(), "vlserve_requests_in_flight") >= n:
            return
        time.sleep(0.02)
    raise TimeoutError("request never became in-flight")


def test_disconnected_client_cancels_its_work(e2e_repo):
    with ServerProcess("--model-repo", str(e2e_repo)) as server:
        body = json.dumps(SLOW).encode()
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"POST /v1/caption HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_in_flight(server)
        sock.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = server.metrics()
            if metric(text, "vlserve_requests_total", model="toy", task="caption", outcome="cancelled") == 1:
                break
            time.sleep(0.05)
        assert metric(text, "vlserve_requests_total", model="toy", task="caption", outcome="cancelled") == 1
        assert metric(text, "vlserve_requests_in_flight") == 0
        r = httpx.post(server.url + "/v1/caption", json={"images": [img(1)]}, timeout=60)
        assert r.status_code == 200  # the worker is free again


def wait_ready_status(server, status: int, timeout=10) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(server.url + "/health/ready", timeout=10)
        if r.status_code == status or time.monotonic() > deadline:
            return r
        time.sleep(0.01)


BURST = 16  # ~2 s of decoding still queued at SIGTERM on a 2-core VM; the checks take milliseconds


def test_sigterm_drains_in_flight_requests(drain_repo):
    with ServerProcess("--model-repo", str(drain_repo), env={"VLSERVE_DRAIN_GRACE_S": "120"}) as server:
        with ThreadPoolExecutor(BURST) as pool:
            burst = [pool.submit(httpx.post, server.url + "/v1/caption", json=SLOW, timeout=300) for _ in range(BURST)]
            wait_in_flight(server, n=BURST)
            server.terminate()
            ready = wait_ready_status(server, 503)
            assert ready.status_code == 503 and ready.json()["error"]["message"] == "draining"
            late = httpx.post(server.url + "/v1/caption", json={"images": [img(2)]}, timeout=10)
            assert late.status_code == 503 and late.headers["retry-after"]
            assert [f.result(300).status_code for f in burst] == [200] * BURST  # in-flight requests finished
        # uvicorn re-raises the signal after a clean shutdown, so the exit reads as SIGTERM
        assert server.proc.wait(60) in (0, -15)
        assert "draining" in server.log.read_text() and "Application shutdown complete" in server.log.read_text()
