"""vlserve on Ray Serve (issue 17): on a local Ray cluster, two replicas of blip-toy behind the
ingress answer as `vlserve serve`'s own app answers (captions, errors, limits, the model list,
a streamed chat completion), spread concurrent requests over both replicas, and answer every
request of a load once when a replica is killed in the middle of it. deploy/ray/serve.yaml is
a valid Serve config whose args build_app takes."""

import asyncio
import base64
import json
import socket
import time
from pathlib import Path

import httpx
import pytest
import yaml
from starlette.testclient import TestClient

from tests.helpers.toys import REPO, held_out_world, needs
from vlserve.api.app import create_app
from vlserve.settings import Settings

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
schema = pytest.importorskip("ray.serve.schema")

from vlserve.integrations.ray_ingress import Ingress  # noqa: E402 - needs ray
from vlserve.integrations.ray_merge import Answer, merge_metrics, merge_models  # noqa: E402
from vlserve.integrations.ray_serve import ServeArgs, build_app, plan  # noqa: E402

pytestmark = needs("blip-toy")
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ray" / "serve.yaml"
SETTINGS = {"max_body_bytes": 300_000, "max_images": 4}  # small limits: cheap to cross
REPLICA = "x-vlserve-replica"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def images():
    return [b64(png) for png in held_out_world(32, seed=17)[1]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`vlserve serve`'s app, in-process, over a repository holding blip-toy alone."""
    root = tmp_path_factory.mktemp("repo")
    (root / "blip-toy").symlink_to(REPO / "blip-toy")
    with TestClient(create_app(Settings(model_repo=root, **SETTINGS))) as client:
        for _ in range(600):
            if client.get("/health/ready").status_code == 200:
                break
            time.sleep(0.05)
        yield client


@pytest.fixture(scope="module")
def captions(reference, images):
    """image -> the reference app's /v1/caption answer for it."""
    return {image: reference.post("/v1/caption", json={"images": [image]}).json() for image in images}


@pytest.fixture(scope="module")
def cluster():
    """The ingress's base URL: blip-toy on two replicas (half a CPU each) of a 2-CPU local cluster."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"model_repo": str(REPO), "models": ["blip-toy"], "settings": SETTINGS,
                             "deployment": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.5}}}),
                  name="vlserve", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


async def posted(base: str, bodies: list[dict], path: str = "/v1/caption") -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        return await asyncio.gather(*(client.post(path, json=body) for body in bodies))


def same_captions(got: dict, want: dict) -> None:
    assert got["model"] == want["model"] and got["usage"] == want["usage"]
    for g, w in zip(got["captions"], want["captions"], strict=True):
        assert [(c["text"], c["tokens"]) for c in g] == [(c["text"], c["tokens"]) for c in w]
        assert [c["logprob"] for c in g] == pytest.approx([c["logprob"] for c in w], abs=1e-4)


def test_the_config_file_is_a_serve_config_whose_args_build_app_takes(monkeypatch):
    config = yaml.safe_load(CONFIG.read_text())
    checked = schema.ServeDeploySchema.model_validate(config)
    (app,) = checked.applications
    assert app.import_path == "vlserve.integrations.ray_serve:build_app" and app.route_prefix == "/"
    monkeypatch.chdir(CONFIG.parents[2])  # `serve run deploy/ray/serve.yaml` runs from the repository root
    assert build_app(app.args) is not None
    args = ServeArgs.model_validate(app.args)
    deployments, models, default = plan(args, Settings(model_repo=args.model_repo, **args.settings))
    assert models == {"blip-toy": "blip-toy"} and default == "blip-toy"
    # each override names a deployment build_app makes (Serve refuses others when deploying)
    assert {d.name for d in app.deployments} <= set(deployments) | {"ingress"}


def test_build_app_refuses_a_model_the_repository_lacks():
    with pytest.raises(ValueError, match="no model folder for nope"):
        build_app({"model_repo": str(REPO), "models": ["nope"]})


def test_models_without_a_group_get_a_deployment_each_and_the_default_model_names_the_default_one():
    settings = Settings(model_repo=REPO)
    deployments, models, default = plan(ServeArgs(), settings)
    assert deployments == {name: [name] for name in models} and "blip-toy" in models
    assert default == "blip-toy"  # its model.toml says default = true
    assert list(models) == sorted(models)  # the repository's order
    others = [name for name in models if name != "blip-toy"]
    grouped = plan(ServeArgs(groups={"all": ["blip-toy", *others]}), settings)
    assert grouped == ({"all": ["blip-toy", *others]}, {name: "all" for name in models}, "all")
    with pytest.raises(ValueError, match="more than one group: blip-toy"):
        plan(ServeArgs(groups={"a": ["blip-toy"], "b": ["blip-toy"]}), settings)


def form(**fields) -> tuple[str, bytes]:
    request = httpx.Request("POST", "http://x", data=fields, files={"images": ("a.png", b"\x89PNG", "image/png")})
    return request.headers["content-type"], request.read()


@pytest.mark.parametrize("path, content_type, body, named", [
    ("/v1/caption", "application/json", b'{"model": "coca-toy", "images": []}', "coca-toy"),
    ("/v1/capfilt", "application/json", b'{"captioner": "coca-toy", "filter": "blip-toy"}', "coca-toy"),
    ("/v1/caption", "application/json", b'{"images": []}', None),
    ("/v1/caption", "application/json", b'{"model": 3', None),  # the default deployment answers its error
    ("/v1/caption", "application/json", b'["model"]', None),
    ("/v1/vqa", *form(model="beit3-toy", questions="what?"), "beit3-toy"),
    ("/v1/vqa", *form(questions="what?"), None),
    ("/v2/models/coca-toy/versions/1/infer", "application/json", b'{"model": "blip-toy"}', "coca-toy"),
])
def test_the_model_a_request_names_picks_its_deployment(path, content_type, body, named):
    assert asyncio.run(Ingress._named(path, content_type, body)) == named


def test_the_model_lists_of_several_deployments_merge_in_the_repository_order():
    def listing(*names):
        return Answer(200, [], json.dumps({"models": [{"name": n} for n in names], "object": "list",
                                           "data": [{"id": n, "object": "model"} for n in names]}).encode())

    merged = json.loads(merge_models(["a", "b", "c"], [listing("c"), listing("a", "b")]).body)
    assert [m["name"] for m in merged["models"]] == ["a", "b", "c"] == [m["id"] for m in merged["data"]]


def test_the_metrics_of_several_deployments_merge_into_one_exposition_labelled_by_replica():
    from prometheus_client.parser import text_string_to_metric_families

    from vlserve.metrics import Metrics

    answers = []
    for n, model in enumerate(("a", "b")):
        metrics = Metrics()
        for _ in range(n + 1):
            metrics.request_done(model, "caption", "succeeded", 200, 0.1)
        answers.append(Answer(200, [(b"content-type", metrics.content_type.encode()),
                                    (b"x-vlserve-replica", f"r{n}".encode())], metrics.render()))
    merged = merge_metrics(["da", "db"], answers)
    families = list(text_string_to_metric_families(merged.body.decode()))
    assert len({f.name for f in families}) == len(families)  # each family once
    (requests,) = [f for f in families if f.name == "vlserve_requests"]
    totals = {(x.labels["deployment"], x.labels["replica"], x.labels["model"]): x.value
              for x in requests.samples if x.name == "vlserve_requests_total"}
    assert totals == {("da", "r0", "a"): 1.0, ("db", "r1", "b"): 2.0}


def test_concurrent_captions_spread_over_both_replicas_and_equal_vlserve_serves(cluster, captions, images):
    answers = asyncio.run(posted(cluster, [{"images": [image]} for image in images[:16]]))
    assert [r.status_code for r in answers] == [200] * 16, answers[0].text
    assert len({r.headers[REPLICA] for r in answers}) == 2
    for image, answer in zip(images, answers):
        same_captions(answer.json(), captions[image])


def too_long(n: int):
    yield b'{"images": ["' + b"A" * n + b'"]}'  # a generator: sent chunked, without a Content-Length


JSON = {"content-type": "application/json"}
INVALID = {  # each a function: a generator body is sent once
    "unknown model": lambda: ("POST", "/v1/caption", {"json": {"model": "nope", "images": ["AAAA"]}}),
    "not an image": lambda: ("POST", "/v1/caption", {"json": {"images": ["bm90IGFuIGltYWdl"]}}),
    "schema": lambda: ("POST", "/v1/caption", {"json": {"images": "not a list"}}),
    "too many images": lambda: ("POST", "/v1/caption", {"json": {"images": ["AAAA"] * 5}}),
    "Content-Length over the limit": lambda: ("POST", "/v1/caption",
                                              {"content": b"{" + b" " * 400_000 + b"}", "headers": JSON}),
    "chunked body over the limit": lambda: ("POST", "/v1/caption", {"content": too_long(400_000), "headers": JSON}),
    "media type": lambda: ("POST", "/v1/caption", {"content": b"hi", "headers": {"content-type": "text/plain"}}),
    "multipart, bad image": lambda: ("POST", "/v1/vqa", {"files": {"images": ("a.png", b"not a png", "image/png")},
                                                         "data": {"model": "blip-toy", "questions": "what?"}}),
    "KServe, unknown model": lambda: ("POST", "/v2/models/nope/infer", {"json": {"inputs": []}}),
    "no such route": lambda: ("GET", "/v1/nothing", {}),
}


@pytest.mark.parametrize("case", INVALID)
def test_an_invalid_request_gets_the_answer_vlserve_serve_gives(cluster, reference, case):
    with httpx.Client(base_url=cluster, timeout=60) as client:
        method, path, kwargs = INVALID[case]()
        got = client.request(method, path, **kwargs)
    method, path, kwargs = INVALID[case]()
    want = reference.request(method, path, **kwargs)
    assert got.status_code == want.status_code and got.status_code >= 400
    assert got.content == want.content
    assert got.headers.get("retry-after") == want.headers.get("retry-after")


def test_models_probes_kserve_metadata_and_metrics_span_the_deployments(cluster, reference):
    with httpx.Client(base_url=cluster, timeout=60) as client:
        models, want = client.get("/v1/models").json(), reference.get("/v1/models").json()
        for doc in (models, want):
            for m in doc["models"]:  # what differs between processes: load time, the cache's fill
                m.pop("load_seconds")
                m["details"]["image_cache"] = {"budget_bytes": m["details"]["image_cache"]["budget_bytes"]}
            for m in doc["data"]:
                m.pop("created")
        assert models == want
        for probe in ("/health/live", "/health/ready", "/v2/health/ready", "/v2/models/blip-toy"):
            got = client.get(probe)
            assert (got.status_code, got.json()) == (200, reference.get(probe).json())
        metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    lines = metrics.text.splitlines()
    assert sum(x.startswith("# TYPE vlserve_requests_in_flight ") for x in lines) == 1
    (gauge,) = [x for x in lines if x.startswith("vlserve_requests_in_flight")]  # the one deployment's
    assert gauge.startswith('vlserve_requests_in_flight{deployment="blip-toy",replica="SERVE_REPLICA::vlserve#'
                            'blip-toy#')


def streamed(client, body: dict) -> tuple[str, list]:
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [x.removeprefix("data: ") for x in r.iter_lines() if x.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(x) for x in events[:-1]]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]), chunks


def test_a_streamed_chat_completion_arrives_as_vlserve_serve_streams_it(cluster, reference, images):
    body = {"model": "blip-toy", "stream": True, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + images[0]}}]}]}
    with httpx.Client(base_url=cluster, timeout=60) as client:
        text, chunks = streamed(client, body)
    want, want_chunks = streamed(reference, body)
    assert text == want and len(chunks) == len(want_chunks) and text


def test_a_replica_killed_under_load_leaves_every_request_answered_once(cluster, reference, images):
    # captions of a fixed 31 tokens: a replica holds requests most of the time, not only at batch ends
    bodies = [{"images": [image], "max_new_tokens": 31, "min_new_tokens": 31} for image in images]
    answers, after_kill = {}, set()  # body index -> its answer; those sent once the replica was dead
    killed, going = asyncio.Event(), asyncio.Event()

    async def client_loop(client, k):  # 8 clients, each sending its requests one after another
        for i in range(k, len(bodies), 8):
            if killed.is_set():
                after_kill.add(i)
            answers[i] = await client.post("/v1/caption", json=bodies[i])
            if len(answers) >= 8:
                going.set()

    async def load():
        async with httpx.AsyncClient(base_url=cluster, timeout=120) as client:
            clients = asyncio.gather(*(client_loop(client, k) for k in range(8)))
            await going.wait()
            await asyncio.sleep(0.05)  # away from the moment a batch ended
            victim = answers[0].headers[REPLICA] if 0 in answers else next(iter(answers.values())).headers[REPLICA]
            await asyncio.to_thread(ray.kill, ray.get_actor(victim, namespace="serve"), no_restart=True)
            killed.set()
            unanswered = len(bodies) - len(answers)
            await clients
            return victim, unanswered

    victim, unanswered = asyncio.run(load())
    assert unanswered >= 8, "the load ended before the kill"
    assert sorted(answers) == list(range(len(bodies)))  # one answer each
    for i, answer in answers.items():  # the requests the dead replica held were retried on the other
        assert answer.status_code == 200, answer.text
        same_captions(answer.json(), reference.post("/v1/caption", json=bodies[i]).json())
    assert after_kill and victim not in {answers[i].headers[REPLICA] for i in after_kill}
    later = asyncio.run(posted(cluster, [{"images": [image]} for image in images[:8]]))
    assert [r.status_code for r in later] == [200] * 8
    assert victim not in {r.headers[REPLICA] for r in later}
