"""Helpers for the deployment checks: the repository root, `docker-compose config`, and the
real app's /metrics after some traffic."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient

from tests.api.conftest import b64, png
from tests.helpers.own_blip import make_folder
from vlserve.api.app import create_app
from vlserve.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose_config(*files: str) -> dict:
    """The stack as docker-compose (v1) resolves it: validated, merged, paths made absolute.
    Needs no Docker engine."""
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing in CI: .ci/run installs Debian's docker-compose package")
        pytest.skip("docker-compose (v1) is not installed: apt-get install docker-compose")
    args = [exe, "--project-directory", str(ROOT)]
    for f in files:
        args += ["-f", str(ROOT / f)]
    # a clean environment: the ${VAR:-default}s resolve to their defaults
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLSERVE_", "COMPOSE_", "GRAFANA_"))}
    out = subprocess.run([*args, "config"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def load_yaml(relative: str) -> dict:
    return yaml.safe_load((ROOT / relative).read_text())


@pytest.fixture(scope="session")
def metrics_text(tmp_path_factory) -> str:
    """/metrics from the real app after a request of every kind (a tiny random model)."""
    root = tmp_path_factory.mktemp("deploy-repo")
    make_folder(root / "toy")
    app = create_app(Settings(model_repo=root))
    image = b64(png())
    with TestClient(app) as client:
        for _ in range(600):
            if client.get("/health/ready").status_code == 200:
                break
            time.sleep(0.05)
        bodies = {"/v1/caption": {"images": [image], "max_new_tokens": 3},
                  "/v1/embeddings": {"images": [image], "texts": ["a"]},
                  "/v1/retrieval/score": {"images": [image], "texts": ["a"], "heads": ["itc", "itm"]},
                  "/v1/vqa": {"images": [image], "questions": ["what?"], "max_new_tokens": 2}}
        for path, body in bodies.items():
            assert client.post(path, json=body).status_code == 200, path
        assert client.post("/v1/caption", json={"images": ["bad"]}).status_code >= 400  # an error, too
        # what a GPU server reports; a CPU one has none, but the dashboard's names must still hold
        app.state.gateway.metrics.device_memory.labels("cuda:0").set(1.0)
        response = client.get(load_yaml("deploy/prometheus.yml")["scrape_configs"][0].get("metrics_path",
                                                                                         "/metrics"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return response.text
