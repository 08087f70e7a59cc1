"""deploy/k8s without a cluster: the Kustomize trees render (kustomize.py, a small renderer for
the subset they use, cross-checked against `kubectl kustomize` where kubectl is installed), every
core resource validates against the Kubernetes OpenAPI schemas that kubernetes-validate ships
(strict: unknown fields fail), the CRD kinds (ServiceMonitor, InferenceService) pass the
structural check of crd_schemas.py, and the manifests agree with the code: probe paths and the
port are vlserve's and behave as the probes need, the termination grace outlasts the drain, the
HPA's metric is one vlserve exports, every env var is a real setting, the images are compose's."""

from __future__ import annotations

import copy
import inspect
import json
import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import tomllib
import yaml
from referencing import Registry
from starlette.testclient import TestClient

from tests.deploy.conftest import ROOT
from tests.deploy.crd_schemas import CRD_SCHEMAS, crd_errors, k8s_definitions
from tests.deploy.kustomize import CLUSTER_SCOPED, K8S, by_kind, json_patch, load_all, render
from tests.deploy.test_dockerfile import env as dockerfile_env
from vlserve import server
from vlserve.api import middleware
from vlserve.api.app import create_app
from vlserve.api.gateway import Gateway
from vlserve.metrics import Metrics
from vlserve.settings import Settings

# The oldest and newest Kubernetes minors checked; 1.30 is also the newest that
# kubernetes-validate 1.30 (pyproject's floor) ships. Strict: additionalProperties false.
K8S_VERSIONS = ("1.28", "1.30")
# files in base/ that the kustomization does not list, on purpose (each says why at its top)
NOT_RESOURCES = {"kustomization.yaml", "prometheus-adapter-rules.yaml"}
KSERVE_ENV = {"PROTOCOL"}  # KServe reads it from a custom predictor's container
KSERVE_MODES = {"Serverless", "RawDeployment", "ModelMesh"}


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return render(K8S / "base")


@pytest.fixture(scope="module")
def cpu() -> list[dict]:
    return render(K8S / "overlays/cpu")


@pytest.fixture(scope="module")
def isvc() -> dict:
    (doc,) = load_all("kserve/inferenceservice.yaml")
    return doc


@pytest.fixture(scope="module")
def adapter_rules() -> list[dict]:
    (cm,) = load_all("base/prometheus-adapter-rules.yaml")
    return yaml.safe_load(cm["data"]["config.yaml"])["rules"]


def everything(base, cpu, isvc) -> list[dict]:
    return base + cpu + [isvc] + load_all("base/prometheus-adapter-rules.yaml") + load_all("load-models.yaml")


def pod_specs(base, cpu, isvc) -> list[tuple[str, dict]]:
    """(where, pod spec) of each vlserve pod: the Deployments of both trees and the predictor."""
    out = [(f"{tree}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
           for tree, docs in (("base", base), ("cpu", cpu)) for d in by_kind(docs, "Deployment")]
    return out + [("kserve", isvc["spec"]["predictor"])]


def env_of(container: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


# -- the renderer and the trees ----------------------------------------------------------------

def test_kustomizations_list_every_file_and_only_existing_ones():
    listed = set(yaml.safe_load((K8S / "base/kustomization.yaml").read_text())["resources"])
    assert all((K8S / "base" / f).is_file() for f in listed)
    present = {p.name for p in (K8S / "base").glob("*.y*ml")}
    assert present - NOT_RESOURCES == listed, "a manifest in base/ is neither listed nor in NOT_RESOURCES"


def test_the_renderer_fails_where_kustomize_would():
    doc = {"spec": {"a": [1, 2]}}
    json_patch(doc, [{"op": "add", "path": "/spec/a/-", "value": 3}, {"op": "replace", "path": "/spec/a/0",
                                                                      "value": 0}])
    assert doc == {"spec": {"a": [0, 2, 3]}}
    with pytest.raises(KeyError):
        json_patch(doc, [{"op": "remove", "path": "/spec/nodeSelector"}])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: the renderer alone is used")
@pytest.mark.parametrize("tree", ["base", "overlays/cpu"])
def test_renderer_agrees_with_kubectl_kustomize(tree):
    out = subprocess.run(["kubectl", "kustomize", str(K8S / tree)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr

    def key(d):
        return d["kind"], d["metadata"]["name"]

    theirs = sorted((d for d in yaml.safe_load_all(out.stdout) if d), key=key)
    assert theirs == sorted(render(K8S / tree), key=key)


def test_the_cpu_overlay_drops_every_gpu_need(base, cpu):
    for d in by_kind(base, "Deployment"):
        spec = d["spec"]["template"]["spec"]
        assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert "nvidia" not in json.dumps(cpu)
    assert [d["kind"] for d in cpu] == [d["kind"] for d in base]  # patched, nothing lost
    (pvc,) = by_kind(cpu, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


# -- schemas -----------------------------------------------------------------------------------

def core(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] not in CRD_SCHEMAS]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_resources_validate_strictly(version, base, cpu, isvc):
    docs = core(everything(base, cpu, isvc))
    assert {d["kind"] for d in docs} >= {"Namespace", "PersistentVolumeClaim", "Deployment", "Service",
                                        "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap", "Pod"}
    for d in docs:
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{d['kind']}/{d['metadata']['name']} against {version}: "
                        f"{'.'.join(map(str, e.path))}: {e.message}")


def test_strict_validation_is_not_vacuous(base):
    (deployment, *_) = by_kind(base, "Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = typo["spec"]["template"]["spec"][
        "containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSIONS[-1], strict=True)


@pytest.fixture(scope="module")
def k8s_registry() -> Registry:
    return k8s_definitions(K8S_VERSIONS[-1])


def test_crd_kinds_pass_the_structural_check(base, cpu, isvc, k8s_registry):
    docs = [d for d in everything(base, cpu, isvc) if d["kind"] in CRD_SCHEMAS]
    assert {d["kind"] for d in docs} == set(CRD_SCHEMAS)
    for d in docs:
        assert not crd_errors(d, k8s_registry), (d["kind"], crd_errors(d, k8s_registry))
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["protocolVersion"] = "v2"  # predictor.model's field, not a custom predictor's
    bad["spec"]["predictor"]["containers"][0]["readinesProbe"] = {}
    assert len(crd_errors(bad, k8s_registry)) == 2  # the check is not vacuous, down into the Container


def test_inference_service_speaks_v2_as_kserve_reads_it(isvc):
    predictor = isvc["spec"]["predictor"]
    assert predictor["minReplicas"] <= predictor["maxReplicas"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in KSERVE_MODES
    first = predictor["containers"][0]  # the container KServe takes the protocol from
    assert first["name"] == "kserve-container" and env_of(first)["PROTOCOL"] == "v2"


# -- agreement with the code -------------------------------------------------------------------

def _settings(container: dict, **extra) -> Settings:
    """The settings a container's env gives (pydantic parses the strings as the env would)."""
    values = {k[len("VLSERVE_"):].lower(): v for k, v in env_of(container).items()
              if k.startswith("VLSERVE_") and v is not None}
    return Settings(**{**values, **extra})


def test_every_env_var_is_a_real_setting(base, cpu, isvc):
    fields = {f"VLSERVE_{name.upper()}" for name in Settings.model_fields}
    for where, spec in pod_specs(base, cpu, isvc):
        for c in spec["containers"]:
            names = set(env_of(c))
            allowed = fields | (KSERVE_ENV if where == "kserve" else set())
            assert names <= allowed, f"{where}: {sorted(names - allowed)} are no vlserve setting"
            _settings(c)  # and their values parse


def _port(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return number


def probes(container: dict) -> dict[str, dict]:
    return {k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in container}


def test_probes_hit_vlserve_port(base, cpu, isvc):
    image_port = int(dockerfile_env().get("VLSERVE_PORT", Settings.model_fields["port"].default))
    for where, spec in pod_specs(base, cpu, isvc):
        (c,) = spec["containers"]
        port = int(env_of(c).get("VLSERVE_PORT") or image_port)
        assert [p["containerPort"] for p in c["ports"]] == [port], where
        assert set(probes(c)) == {"startupProbe", "livenessProbe", "readinessProbe"}, where
        for kind, get in probes(c).items():
            assert _port(c, get["port"]) == port, (where, kind)


class _Ready:
    """A repository stand-in that has loaded its models (so readiness turns on the drain alone)."""
    ready, loading_done, models = True, True, {}

    def not_ready_reason(self):
        return ""

    def stop(self):
        pass


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The real app with an API key set and the manifests' env, no model loaded (no lifespan)."""
    (deployment, *_) = by_kind(render(K8S / "base"), "Deployment")
    settings = _settings(deployment["spec"]["template"]["spec"]["containers"][0],
                         api_key="s3cret", model_repo=tmp_path_factory.mktemp("empty-repo"))
    application = create_app(settings)
    yield application
    application.state.gateway.close()


def test_probe_paths_behave_as_the_probes_need(app, base, cpu, isvc):
    """Liveness and startup answer 200 while loading and while draining (else the kubelet
    restarts a pod that is loading or draining); readiness answers 200 only when loaded and
    not draining; none needs the API key, which kubelet does not send."""
    client, gw = TestClient(app), app.state.gateway
    paths = {k: {p["path"] for _, s in pod_specs(base, cpu, isvc) for p in [probes(s["containers"][0])[k]]}
             for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    live, ready = paths["startupProbe"] | paths["livenessProbe"], paths["readinessProbe"]
    loading = gw.repository
    for state in ("loading", "ready", "draining"):
        gw.repository = loading if state == "loading" else _Ready()
        gw.draining = state == "draining"
        for path in live:
            assert client.get(path).status_code == 200, (path, state)
        for path in ready:
            assert client.get(path).status_code == (200 if state == "ready" else 503), (path, state)
    gw.repository, gw.draining = loading, False
    assert (live | ready) <= set(middleware.PROBES)


def _prestop_seconds(container: dict) -> float:
    pre = container.get("lifecycle", {}).get("preStop")
    if pre is None:
        return 0.0
    if "sleep" in pre:
        return float(pre["sleep"]["seconds"])
    program, seconds = pre["exec"]["command"]
    assert program == "sleep", pre
    return float(seconds)


def test_termination_grace_outlasts_the_drain(base, cpu, isvc):
    """After SIGTERM vlserve drains for drain_grace_s, answers the late requests 503 for up to
    Gateway.drain's answer_s, then uvicorn closes connections for timeout_graceful_shutdown:
    the kubelet's SIGKILL must come after all of that and the preStop sleep."""
    answer_s = inspect.signature(Gateway.drain).parameters["answer_s"].default
    found = re.search(r"timeout_graceful_shutdown=(\d+(?:\.\d+)?)", inspect.getsource(server.serve))
    assert found, "server.serve no longer sets uvicorn's timeout_graceful_shutdown: recheck the grace"
    for where, spec in pod_specs(base, cpu, isvc):
        (c,) = spec["containers"]
        need = _prestop_seconds(c) + _settings(c).drain_grace_s + answer_s + float(found[1])
        assert spec["terminationGracePeriodSeconds"] > need, (where, need)


def test_hpas_scale_on_a_gauge_vlserve_exports(base, adapter_rules):
    metrics = Metrics()
    families = {m.name: m for m in metrics.registry.collect()}
    served = {}  # the custom-metrics name the adapter serves -> the vlserve series behind it
    for rule in adapter_rules:
        series = re.match(r"\s*(\w+)", rule["seriesQuery"])[1]
        assert re.fullmatch(rule["name"]["matches"], series)
        served[rule["name"].get("as") or series] = series
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}  # the labels Prometheus adds
    deployments = {d["metadata"]["name"]: d for d in by_kind(base, "Deployment")}
    hpas = by_kind(base, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == set(deployments)
    for hpa in hpas:
        for metric in hpa["spec"]["metrics"]:
            spec = metric[{"Pods": "pods", "Object": "object", "External": "external"}[metric["type"]]]
            name = spec["metric"]["name"]
            assert name in served, f"{name}: no adapter rule serves it"
            family = families.get(served[name])
            assert family is not None, f"{served[name]} is not a metric of vlserve.metrics"
            assert family.type == "gauge"  # averaged as is; a counter would need a rate()
            assert not {"namespace", "pod"} & set(metrics.queue_depth._labelnames)  # no clash with Prometheus'
            container = deployments[hpa["spec"]["scaleTargetRef"]["name"]]["spec"]["template"]["spec"][
                "containers"][0]
            # the target must be reachable before the queues refuse work with 503
            assert float(spec["target"]["averageValue"]) < _settings(container).max_queue_size


def _matches(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def test_selectors_budgets_and_names_fit_together(base):
    deployments, services = by_kind(base, "Deployment"), by_kind(base, "Service")
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in deployments}
    for d in deployments:
        assert "replicas" not in d["spec"]  # the HPA owns them; apply would reset them otherwise
        assert _matches(d["spec"]["selector"]["matchLabels"], pods[d["metadata"]["name"]])
    for kind, selector in [("Service", lambda s: s["spec"]["selector"]),
                           ("PodDisruptionBudget", lambda p: p["spec"]["selector"]["matchLabels"])]:
        for obj in by_kind(base, kind):
            hits = [n for n, labels in pods.items() if _matches(selector(obj), labels)]
            assert hits == [obj["metadata"]["name"]], (kind, obj["metadata"]["name"], hits)
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h["spec"] for h in by_kind(base, "HorizontalPodAutoscaler")}
    for pdb in by_kind(base, "PodDisruptionBudget"):
        assert hpas[pdb["metadata"]["name"]]["minReplicas"] - pdb["spec"]["maxUnavailable"] >= 1
    (monitor,) = by_kind(base, "ServiceMonitor")
    for s in services:
        assert _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ports = {p["name"]: p for p in s["spec"]["ports"]}
        (deployment,) = [d for d in deployments if d["metadata"]["name"] == s["metadata"]["name"]]
        names = {p.get("name") for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for e in monitor["spec"]["endpoints"]:
            assert e["port"] in ports and ports[e["port"]]["targetPort"] in names


def test_the_scrape_path_answers_with_an_api_key_set(app, base):
    """The ServiceMonitor sends no key: the manifests' env must leave /metrics open."""
    (monitor,) = by_kind(base, "ServiceMonitor")
    client = TestClient(app)
    for e in monitor["spec"]["endpoints"]:
        response = client.get(e["path"])
        assert response.status_code == 200 and "vlserve_queue_depth" in response.text, e["path"]
    assert client.get("/v1/models").status_code == 401  # and the key is really on


def test_each_model_folder_is_served_by_one_group_of_its_families(base, isvc):
    """The groups mount model_repo's folders by subPath under VLSERVE_MODEL_REPO; each shipped
    model is served by exactly one Deployment, named after the families it serves."""
    (pvc,) = by_kind(base, "PersistentVolumeClaim")
    served: dict[str, str] = {}
    for where, spec in [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in by_kind(base, "Deployment")] \
            + [("kserve", isvc["spec"]["predictor"])]:
        (c,) = spec["containers"]
        (volume,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
        assert volume["persistentVolumeClaim"] == {"claimName": pvc["metadata"]["name"], "readOnly": True}
        repo = str(_settings(c).model_repo)
        families, pending = set(), False
        for m in c["volumeMounts"]:
            assert m["name"] == volume["name"] and m["readOnly"] and m["mountPath"] == f"{repo}/{m['subPath']}"
            folder = ROOT / "model_repo" / m["subPath"]
            assert folder.is_dir(), f"{where} mounts {m['subPath']}, which is no folder of model_repo/"
            if (folder / "model.toml").is_file():
                families.add(tomllib.loads((folder / "model.toml").read_text())["family"])
            else:  # a toy whose weights (and model.toml) are still to ship: its family is not known here
                pending = True
            if where != "kserve":
                assert m["subPath"] not in served, f"{m['subPath']} in {served[m['subPath']]} and {where}"
                served[m["subPath"]] = where
        if where != "kserve":
            named = set(where.split("-")[1:])
            assert named >= families if pending else named == families, (where, families)
    shipped = {p.parent.name for p in (ROOT / "model_repo").glob("*/model.toml")}
    assert shipped <= set(served), f"shipped models without a group: {sorted(shipped - set(served))}"
    for name in set(served) - shipped:  # mounted before its weights ship: only a toy still training
        assert (ROOT / "model_repo" / name / "train.py").is_file(), f"{name} is mounted but no model folder"


def test_images_are_the_ones_compose_builds(base, cpu, isvc):
    def image(compose: str, service: str) -> str:
        return yaml.safe_load((ROOT / compose).read_text())["services"][service]["image"]

    gpu, cpu_image = image("docker-compose.yml", "vlserve"), image("docker-compose.cpu.yml", "vlserve-cpu")
    for tree, docs, expected in (("base", base, gpu), ("cpu", cpu, cpu_image)):
        for d in by_kind(docs, "Deployment"):
            assert [c["image"] for c in d["spec"]["template"]["spec"]["containers"]] == [expected], tree
    assert [c["image"] for c in isvc["spec"]["predictor"]["containers"]] == [gpu]


def test_everything_lands_in_one_namespace(base, cpu, isvc):
    (namespace,) = by_kind(base, "Namespace")
    name = namespace["metadata"]["name"]
    for d in base + cpu + [isvc] + load_all("load-models.yaml"):
        if d["kind"] not in CLUSTER_SCOPED:
            assert d["metadata"]["namespace"] == name, (d["kind"], d["metadata"]["name"])
    (loader,) = load_all("load-models.yaml")
    (pvc,) = by_kind(base, "PersistentVolumeClaim")
    assert loader["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_the_readme_names_only_existing_paths():
    text = (ROOT / "deploy/README.md").read_text()
    paths = set(re.findall(r"deploy/k8s/[\w./-]*\w", text))
    assert {"deploy/k8s/overlays/cpu", "deploy/k8s/kserve/inferenceservice.yaml"} <= paths
    assert [p for p in paths if not (ROOT / p).exists()] == []
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
             for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    assert [a for a in re.findall(r"\]\(#([\w-]+)\)", text) if a not in slugs] == []  # the table's links
