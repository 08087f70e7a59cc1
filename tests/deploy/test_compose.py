"""docker-compose.yml and its CPU override, as docker-compose itself resolves them: they
validate, every file they mount exists, and the pieces point at each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT, compose_config, load_yaml
from vlserve.settings import Settings

SAME_IN_BOTH = ("ports", "volumes", "environment", "stop_grace_period", "restart")


@pytest.fixture(scope="module")
def gpu() -> dict:
    return compose_config("docker-compose.yml")["services"]


@pytest.fixture(scope="module")
def cpu() -> dict:
    return compose_config("docker-compose.yml", "docker-compose.cpu.yml")["services"]


def binds(service: dict) -> dict[str, tuple[Path, str]]:
    """container path -> (host path, mode) for each bind mount (named volumes left out)."""
    out = {}
    for v in service.get("volumes", []):
        source, target, *mode = v.split(":") if isinstance(v, str) else (v["source"], v["target"])
        if source.startswith("/"):
            out[target] = (Path(source), mode[0] if mode else "rw")
    return out


def test_the_gpu_stack(gpu):
    assert set(gpu) == {"vlserve", "prometheus", "grafana"}
    vl = gpu["vlserve"]
    (device,) = vl["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    assert Path(vl["build"]["context"]) == ROOT and (ROOT / "Dockerfile").is_file()
    assert [(p["published"], p["target"]) for p in vl["ports"]] == [(8000, 8000)]
    assert binds(vl) == {"/models": (ROOT / "model_repo", "ro")}


def test_every_setting_is_a_real_one(gpu):
    fields = {f"VLSERVE_{name.upper()}" for name in Settings.model_fields}
    env = gpu["vlserve"]["environment"]
    assert set(env) <= fields, set(env) - fields
    grace = float(env["VLSERVE_DRAIN_GRACE_S"])
    assert int(gpu["vlserve"]["stop_grace_period"].rstrip("s")) > grace  # drain before SIGKILL


def test_mounted_files_exist_where_their_users_look(gpu):
    for name, service in gpu.items():
        for target, (source, mode) in binds(service).items():
            assert source.exists(), f"{name} mounts missing {source}"
            assert mode == "ro", f"{name} mounts {source} writable"
    assert binds(gpu["prometheus"])["/etc/prometheus/prometheus.yml"][0] == ROOT / "deploy/prometheus.yml"
    grafana = binds(gpu["grafana"])
    assert grafana["/etc/grafana/provisioning"][0] == ROOT / "deploy/grafana/provisioning"
    provider = load_yaml("deploy/grafana/provisioning/dashboards/vlserve.yml")["providers"][0]
    dashboards, _ = grafana[provider["options"]["path"]]
    home = gpu["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).relative_to(provider["options"]["path"])).is_file()


def test_prometheus_target_is_the_vlserve_service(gpu):
    (target,) = load_yaml("deploy/prometheus.yml")["scrape_configs"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in gpu and int(port) == gpu[host]["ports"][0]["target"]


def test_cpu_override(cpu, gpu):
    assert cpu["vlserve"]["profiles"] == ["gpu"]  # not started unless asked for
    assert "profiles" not in cpu["vlserve-cpu"] and "deploy" not in cpu["vlserve-cpu"]
    args = cpu["vlserve-cpu"]["build"]["args"]
    assert "cuda" not in args["BASE_IMAGE"] and args["TORCH_INDEX_URL"].endswith("/cpu")
    assert cpu["vlserve-cpu"]["networks"]["default"]["aliases"] == ["vlserve"]  # what Prometheus scrapes
    for key in SAME_IN_BOTH:
        assert cpu["vlserve-cpu"][key] == gpu["vlserve"][key], key
    assert {"prometheus", "grafana"} <= set(cpu)
