"""Schemathesis over the live app's OpenAPI document: generated requests (valid and not)
never get a 500, and every response matches the documented status codes, content types
and schemas. Bounded: a few dozen examples per operation, about a minute on 2 cores."""

import copy

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

from schemathesis.checks import not_a_server_error, positive_data_acceptance  # noqa: E402

from tests.api.conftest import Live  # noqa: E402
from tests.helpers.own_blip import make_folder  # noqa: E402
from vlserve.settings import Settings  # noqa: E402

EXAMPLES = 100


@pytest.fixture(scope="module")
def loadable(tmp_path_factory):
    """Models that load: a request naming a model that failed to load gets its designed
    500 model_failed (tests/api/test_hardening.py), which is no input error."""
    root = tmp_path_factory.mktemp("schemathesis-repo")
    make_folder(root / "toy")
    make_folder(root / "cap", seed=1)
    (root / "cap" / "model.toml").write_text('tasks = ["caption"]\n')
    return root


@pytest.fixture(scope="module")
def app(loadable):
    live = Live(Settings(model_repo=loadable, max_images=4, max_texts=8, max_body_bytes=2_000_000))
    live.gateway.repository.load_all()  # models ready before the first generated request

    async def without_lifespan(scope, receive, send):
        """The test client starts and stops the lifespan around every call; the app's
        lifespan (load models, then close them) runs once here instead."""
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await live.app(scope, receive, send)

    yield without_lifespan
    live.gateway.close()


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def json_schema(app, api_schema):
    """The document without its multipart bodies, for negative cases: schemathesis' negative
    generation may draw from the form, whose binary images it cannot mutate (it raises
    "ValueError: Unsupported type: 'Binary'")."""
    raw = copy.deepcopy(api_schema.raw_schema)
    for ops in raw["paths"].values():
        for op in ops.values():
            op.get("requestBody", {}).get("content", {}).pop("multipart/form-data", None)
    loaded = schemathesis.openapi.from_dict(raw)
    loaded.app, loaded.location = app, "/openapi.json"
    return loaded


def own_deadline_passed(case, response) -> bool:
    """A 504 for a request that set itself a deadline shorter than a second: the designed
    answer on a busy machine, no server error (it still has to match the document)."""
    body = case.body if isinstance(case.body, dict) else {}
    timeout = body.get("timeout_s")
    if response.status_code != 504 or not isinstance(timeout, (int, float, str)):
        return False
    try:
        short = float(timeout) < 1
    except ValueError:
        return False
    return short and b"deadline_exceeded" in response.content



def operations():
    """(method, path, media type) of every documented operation, read without loading a model."""
    from vlserve.api.app import create_app

    spec = create_app(Settings(model_repo="/nonexistent")).openapi()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content")
            for media in body or [None]:
                # nothing to violate without a body; a form field is text whatever type the
                # schema gives it, so type violations only exist in JSON
                modes = list(GenerationMode) if media == "application/json" else [GenerationMode.POSITIVE]
                for mode in modes:
                    yield pytest.param(method.upper(), path, media, mode, id=f"{method}-{path}-{media}-{mode.value}")


SEEN: dict[tuple[str, str], list[int]] = {}  # statuses per (path, mode), for the last test


@pytest.mark.parametrize("method,path,media,mode", list(operations()))
def test_generated_requests(api_schema, json_schema, method, path, media, mode):
    operation = (api_schema if mode is GenerationMode.POSITIVE else json_schema)[path][method]
    kwargs = {"media_type": media} if media else {}

    @given(case=operation.as_strategy(mode, **kwargs))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        # negative cases may be sent as a form too, where every value is text: nothing to violate
        assume(mode is GenerationMode.POSITIVE or case.media_type == "application/json")
        # every default check but one: a schema cannot say "valid base64 of a PNG", so
        # schema-valid bodies may rightly get 4xx (the other checks hold them to the docs)
        response = case.call()
        excluded = [positive_data_acceptance] + ([not_a_server_error] if own_deadline_passed(case, response) else [])
        case.validate_response(response, excluded_checks=excluded)
        SEEN.setdefault((path, mode.value), []).append(response.status_code)

    check()


def test_the_generated_requests_reached_the_models():
    """Not vacuous: some generated requests were served (2xx), negative ones refused (4xx)."""
    if not SEEN:
        pytest.skip("run with the generated-request tests")
    assert any(200 <= c < 300 for c in SEEN.get(("/v1/embeddings", "positive"), []))
    assert all(400 <= c < 500 for c in SEEN.get(("/v1/caption", "negative"), [400]))
