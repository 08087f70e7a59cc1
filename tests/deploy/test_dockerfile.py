"""The Dockerfile without a Docker engine: what it copies survives .dockerignore, it runs as
a non-root user on the port compose publishes, and its HEALTHCHECK command really tells a
ready server from one that is not."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy.conftest import ROOT
from vlserve.settings import Settings


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def args_of(kind: str) -> list[str]:
    return [rest for k, rest in instructions() if k == kind]


def env() -> dict[str, str]:
    return dict(pair.split("=", 1) for rest in args_of("ENV") for pair in shlex.split(rest))


def _matches(pattern: str, path: str) -> bool:
    if pattern.startswith("**/"):
        parts = path.split("/")
        return any(fnmatch.fnmatch("/".join(parts[i:]), pattern[3:]) for i in range(len(parts)))
    return pattern.count("/") == path.count("/") and fnmatch.fnmatch(path, pattern)


def ignored(path: str) -> bool:
    """Docker's rule: a pattern matches a path or any folder above it; the last pattern that
    matches decides, and `!` keeps."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if pattern and not pattern.startswith("#"):
            keep = pattern.startswith("!")
            if any(_matches(pattern.lstrip("!").rstrip("/"), p) for p in prefixes):
                verdict = not keep
    return verdict


def test_copies_survive_dockerignore():
    sources = [src for rest in args_of("COPY") for src in rest.split()[:-1]]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not ignored(src), f".dockerignore drops {src}"
    for path in ["server/vlserve/api/app.py", "kernels/vlserve_kernels/__init__.py"]:
        assert not ignored(path), path
    for path in [".venv", ".git", "model_repo", "tests", "server/vlserve/__pycache__"]:
        assert ignored(path), path


def test_runs_as_non_root_on_the_published_port():
    (user,) = args_of("USER")
    assert user not in ("root", "0")
    (port,) = args_of("EXPOSE")
    assert env()["VLSERVE_PORT"] == port == "8000" and env()["VLSERVE_HOST"] == "0.0.0.0"
    assert env()["VLSERVE_MODEL_REPO"] == "/models"  # where compose mounts the model repository
    fields = {f"VLSERVE_{n.upper()}" for n in Settings.model_fields}
    assert {k for k in env() if k.startswith("VLSERVE_")} <= fields


def test_gpu_base_by_default_and_the_server_command():
    defaults = dict(a.split("=", 1) for a in args_of("ARG") if "=" in a)
    assert "cuda" in defaults["BASE_IMAGE"] and defaults["TORCH_INDEX_URL"].endswith(("cu126", "cu124", "cu128"))
    (cmd,) = args_of("CMD")
    program, *rest = json.loads(cmd)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert program in scripts and rest == ["serve"]


class Health:
    """A loopback server whose /health/ready answers `status`."""

    def __init__(self, status: int):
        self.paths = paths = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                paths.append(self.path)
                self.send_response(status if self.path == "/health/ready" else 404)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_healthcheck_command(status, healthy):
    (check,) = args_of("HEALTHCHECK")
    program, *args = json.loads(check[check.index("CMD") + 3:])
    assert program == "python"  # the venv's, first on PATH in the image
    server = Health(status)
    try:
        done = subprocess.run([sys.executable, *args], env={**os.environ, "VLSERVE_PORT": str(server.port)},
                              capture_output=True, timeout=30)
    finally:
        server.close()
    assert server.paths == ["/health/ready"]
    assert (done.returncode == 0) == healthy
