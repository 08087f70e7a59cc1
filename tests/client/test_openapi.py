"""The SDK's route table and models agree with the server's /openapi.json: every route the
SDK calls exists with the body and answer the SDK assumes; every model, nested ones too, has
the same field names, required-ness and JSON types; and every task route is covered."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from vlserve.api.app import create_app
from vlserve.settings import Settings
from vlserve_client._base import LIVE, READY, ROUTES


@pytest.fixture(scope="module")
def spec(client_repo):
    app = create_app(Settings(model_repo=client_repo))
    try:
        return TestClient(app).get("/openapi.json").json()  # no lifespan: no model loads
    finally:
        app.state.gateway.close()


def shape(schema: dict, defs: dict, optional: bool = False, seen=()):
    """A JSON schema reduced to what both sides must share. An optional field's `null` is
    dropped: the SDK leaves unset fields out rather than send the server's defaults."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return ("ref",) if name in seen else shape(defs[name], defs, False, (*seen, name))
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if not (optional and s.get("type") == "null")]
        if len(options) == 1:
            return shape(options[0], defs, False, seen)
        return ("anyOf", tuple(sorted((shape(s, defs, False, seen) for s in options), key=repr)))
    if "enum" in schema or "const" in schema:
        return ("enum", tuple(sorted(schema.get("enum", [schema.get("const")]))))
    kind = schema.get("type")
    if kind == "array":
        return ("array", shape(schema.get("items", {}), defs, False, seen))
    if "properties" in schema:
        required = set(schema.get("required", []))
        return ("object", tuple(sorted(
            (name, name in required, shape(prop, defs, name not in required, seen))
            for name, prop in schema["properties"].items())))
    return (kind,)


def differences(sdk: tuple, server: tuple, where: str) -> list[str]:
    """Readable field-level differences between two shapes."""
    if sdk == server:
        return []
    if sdk[0] == server[0] == "object":
        ours, theirs = {f[0]: f[1:] for f in sdk[1]}, {f[0]: f[1:] for f in server[1]}
        out = [f"{where}.{n}: only in the SDK" for n in ours.keys() - theirs.keys()]
        out += [f"{where}.{n}: only in the server" for n in theirs.keys() - ours.keys()]
        for n in ours.keys() & theirs.keys():
            if ours[n][0] != theirs[n][0]:
                out.append(f"{where}.{n}: required {ours[n][0]} in the SDK, {theirs[n][0]} in the server")
            out += differences(ours[n][1], theirs[n][1], f"{where}.{n}")
        return out
    if sdk[0] == server[0] == "array":
        return differences(sdk[1], server[1], f"{where}[]")
    return [f"{where}: {sdk} in the SDK, {server} in the server"]


def sdk_shape(model) -> tuple:
    schema = model.model_json_schema()
    return shape(schema, schema.get("$defs", {}))


def server_shape(spec, ref: str) -> tuple:
    comps = spec["components"]["schemas"]
    return shape({"$ref": ref}, {**comps, **{k: v for c in comps.values() for k, v in c.get("$defs", {}).items()}})


def refs(operation: dict) -> tuple[str | None, str]:
    """The route's own body and answer; a route that also takes another protocol's body
    (/v1/embeddings: OpenAI's) lists vlserve's first, which is what the SDK sends."""
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    body = body.get("oneOf", [body])[0]
    answer = answer.get("anyOf", [answer])[0]
    return body.get("$ref"), answer["$ref"]


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_route_models_agree(spec, name):
    route = ROUTES[name]
    operation = spec["paths"][route.path][route.method.lower()]
    body_ref, answer_ref = refs(operation)
    problems = differences(sdk_shape(route.response), server_shape(spec, answer_ref), route.response.__name__)
    if route.request is None:
        assert body_ref is None
    else:
        problems += differences(sdk_shape(route.request), server_shape(spec, body_ref), route.request.__name__)
        content = operation["requestBody"]["content"]
        assert "application/json" in content  # what the SDK sends
    assert not problems, "\n".join(problems)


# other tools' protocols on their own paths: their own clients speak them (tests/api/test_rerank.py, ...)
FRONTS = {("post", "/v1/rerank"), ("post", "/rerank"), ("post", "/v1/chat/completions")}


def test_every_server_route_is_covered(spec):
    sdk = {(r.method.lower(), r.path) for r in ROUTES.values()} | {("get", LIVE), ("get", READY)}
    server = {(m, p) for p, ops in spec["paths"].items() for m in ops
              if p != "/metrics" and not p.startswith("/v2")} - FRONTS  # /v2: the Open Inference Protocol
    assert server - sdk == set(), "routes the SDK has no method for"
    assert sdk - server == set(), "routes the SDK calls that the server does not have"


def test_the_comparison_can_fail(spec):
    from pydantic import BaseModel

    class Drifted(BaseModel):
        model: str
        captions: list[list[int]]  # wrong nested type
        extra: int  # not on the server
        # usage missing

    found = differences(sdk_shape(Drifted), server_shape(spec, "#/components/schemas/CaptionResponse"), "X")
    assert sorted(found) == ["X.captions[][]: ('integer',) in the SDK, ('object', (('logprob', True, ('number',)), "
                             "('text', True, ('string',)), ('tokens', True, ('array', ('integer',))))) in the server",
                             "X.extra: only in the SDK", "X.image_embeddings: only in the server",
                             "X.usage: only in the server"]
