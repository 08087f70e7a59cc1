"""The Grafana dashboard queries only what the server exports: every metric name in every
query is a series of the real app's /metrics, rate() is taken of counters and histograms
only, and every label a query groups or filters by is on its metrics."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import ROOT, load_yaml

DASHBOARD = ROOT / "deploy/grafana/dashboards/vlserve.json"
NAME = re.compile(r"\bvlserve_\w+")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
RATED = re.compile(r"\b(?:rate|irate|increase)\(\s*(vlserve_\w+)")


@pytest.fixture(scope="module")
def series(metrics_text) -> dict[str, tuple[str, set[str]]]:
    """Each exported series name -> (its family's type, the label names it carries)."""
    out = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            _, labels = out.setdefault(sample.name, (family.type, set()))
            labels |= set(sample.labels) - {"le"}
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(dashboard) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def problems(expr: str, series) -> list[str]:
    names = set(NAME.findall(expr))
    found = [f"{n} is not exported" for n in sorted(names - series.keys())]
    for n in RATED.findall(expr):
        if n in series and series[n][0] not in ("counter", "histogram"):
            found.append(f"rate() of {n}, a {series[n][0]}")
    labels = set(MATCHER.findall(expr)) | {x.strip() for g in GROUPING.findall(expr) for x in g.split(",")}
    labels |= set(re.findall(r"label_values\(\w+,\s*(\w+)\)", expr))
    known = set().union(*(series[n][1] for n in names if n in series)) | {"le"}
    found += [f"label {x!r} is on none of {sorted(names)}" for x in sorted(labels - known - {""})]
    return found


def test_every_query_uses_exported_names_and_labels(dashboard, series):
    exprs = queries(dashboard)
    assert len(exprs) >= 12
    bad = {e: p for e in exprs if (p := problems(e, series))}
    assert not bad, json.dumps(bad, indent=2)


def test_the_check_catches_mistakes(series):
    assert problems("rate(vlserve_requests_totl[5m])", series) == ["vlserve_requests_totl is not exported"]
    assert problems("rate(vlserve_queue_depth[5m])", series) == ["rate() of vlserve_queue_depth, a gauge"]
    assert problems("sum by (graph) (rate(vlserve_images_total[5m]))", series) == \
        ["label 'graph' is on none of ['vlserve_images_total']"]


def test_the_issue_panels_are_there(dashboard):
    """requests/s by task, latency p50/p99, queue depth, batch size, tokens/s, device memory."""
    text = " ".join(queries(dashboard))
    for needed in ["sum by (task) (rate(vlserve_requests_total", "histogram_quantile(0.5, sum by (le, task)",
                   "histogram_quantile(0.99, sum by (le, task)", "vlserve_queue_depth", "vlserve_batch_size_sum",
                   "rate(vlserve_generated_tokens_total", "vlserve_device_memory_bytes"]:
        assert needed in text, needed
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "vlserve"


def test_provisioning_wires_datasource_and_dashboard(dashboard):
    (source,) = load_yaml("deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    used = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    used |= {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert used == {source["uid"]}
    (provider,) = load_yaml("deploy/grafana/provisioning/dashboards/vlserve.yml")["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/grafana/dashboards"


def test_prometheus_scrapes_what_the_server_serves(metrics_text):
    config = load_yaml("deploy/prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"  # metrics_text was fetched from this path
    assert job["static_configs"][0]["targets"] == ["vlserve:8000"]
    assert "vlserve_requests_total{" in metrics_text
