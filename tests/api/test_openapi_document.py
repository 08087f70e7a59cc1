"""The OpenAPI document as a new user reads it in /docs: every request field says what it
is, its default and its limit (the limit read from the Settings defaults); multipart bodies
take images as files; responses and the GET routes carry examples that are valid."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from vlserve.api import chat_front, openai_front, rerank_front, schemas
from vlserve.api.app import create_app
from vlserve.api.inputs import IMAGE_FIELDS
from vlserve.settings import Settings

FILE = {"type": "string", "format": "binary"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    app = create_app(Settings(model_repo=tmp_path_factory.mktemp("empty")))
    try:
        return app.openapi()
    finally:
        app.state.gateway.close()


def resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def bodies(spec: dict):
    """(where, media type, body schema) of every request body, each oneOf member apart."""
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                for member in content["schema"].get("oneOf", [content["schema"]]):
                    yield f"{method} {path} {media}", media, resolve(spec, member)


def undescribed(schema: dict, where: str) -> list[str]:
    """Fields without a description, and optional fields whose description names no default."""
    required = set(schema.get("required", []))
    problems = []
    for name, prop in schema.get("properties", {}).items():
        text = prop.get("description", "")
        if not text.strip():
            problems.append(f"{where}: {name} has no description")
        elif name not in required and "default" not in text:
            problems.append(f"{where}: optional {name} does not say its default")
    return problems


def test_every_request_field_has_a_description_with_its_default(spec):
    found = list(bodies(spec))
    assert len(found) >= 15  # 9 JSON bodies on their routes, 6 multipart ones
    problems = [p for where, _, schema in found for p in undescribed(schema, where)]
    assert not problems, "\n".join(problems)


def test_the_walk_can_fail():
    schema = {"required": ["a"], "properties": {"a": {"type": "string"}, "b": {"description": "a b"},
                                                "c": {"description": "c; default 1"}}}
    assert undescribed(schema, "x") == ["x: a has no description", "x: optional b does not say its default"]


def limit(name: str) -> str:
    return f"default {Settings.model_fields[name].default} (VLSERVE_{name.upper()})"


@pytest.mark.parametrize("schema,field,settings", [
    ("CaptionRequest", "images", ["max_images", "max_pixels", "max_request_pixels"]),
    ("CaptionRequest", "max_new_tokens", ["max_new_tokens"]),
    ("CaptionRequest", "num_beams", ["max_beams"]),
    ("VqaRequest", "max_new_tokens", ["max_new_tokens"]),
    ("ScoreRequest", "texts", ["max_texts", "max_text_chars"]),
    ("VqaRequest", "questions", ["max_texts", "max_text_chars"]),
    ("RankRequest", "query_text", ["max_text_chars"]),
    ("EmbeddingsRequestMultipart", "images", ["max_images"]),
    ("OpenAIEmbeddingsRequest", "input", ["max_texts", "max_images"]),
    ("RerankRequest", "documents", ["max_texts", "max_images"]),
    ("ChatRequest", "max_tokens", ["max_new_tokens"]),
    ("CapfiltRequest", "timeout_s", []),
])
def test_limits_are_named_with_the_settings_defaults(spec, schema, field, settings):
    text = spec["components"]["schemas"][schema]["properties"][field]["description"]
    for name in settings:
        assert limit(name) in text, (name, text)
    if field == "timeout_s":
        assert "default 60 (VLSERVE_REQUEST_TIMEOUT_S)" in text
    if field == "images":
        assert f"default {Settings.model_fields['max_image_bytes'].default >> 20} MiB (VLSERVE_MAX_IMAGE_BYTES)" in text


def test_task_defaults_are_the_tasks_own(spec):
    comps = spec["components"]["schemas"]
    assert comps["CaptionRequest"]["properties"]["max_new_tokens"]["description"].endswith("else 20")
    assert comps["VqaRequest"]["properties"]["max_new_tokens"]["description"].endswith("else 10")
    assert "default 0.9" in comps["CapfiltRequest"]["properties"]["top_p"]["description"]


def test_multipart_bodies_take_images_as_files(spec):
    forms = [(where, schema) for where, media, schema in bodies(spec) if media == "multipart/form-data"]
    assert {w.split()[1] for w, _ in forms} == {"/v1/caption", "/v1/embeddings", "/v1/retrieval/score",
                                                 "/v1/retrieval/rank", "/v1/vqa", "/v1/capfilt"}
    for where, schema in forms:
        images = {n: p for n, p in schema["properties"].items() if n in IMAGE_FIELDS}
        assert images, where
        for name, prop in images.items():
            one = prop["items"] if prop.get("type") == "array" else prop
            assert {k: one.get(k) for k in FILE} == FILE, (where, name, prop)
        for name, prop in schema["properties"].items():  # a form field is text: no nested lists, no nulls
            assert "anyOf" not in prop and prop.get("items", {}).get("type") != "array", (where, name)
    assert "texts" not in resolve(spec, {"$ref": "#/components/schemas/CapfiltRequestMultipart"})["properties"]
    assert resolve(spec, {"$ref": "#/components/schemas/RankRequestMultipart"})["properties"]["query_image"] \
        ["format"] == "binary"


RESPONSES = [schemas.CaptionResponse, schemas.EmbeddingsResponse, schemas.ScoreResponse, schemas.RankResponse,
             schemas.VqaResponse, schemas.CapfiltResponse, schemas.ModelsResponse, schemas.ErrorResponse,
             openai_front.OpenAIEmbeddingsResponse, rerank_front.RerankResponse, chat_front.ChatResponse]


@pytest.mark.parametrize("model", RESPONSES, ids=lambda m: m.__name__)
def test_response_examples_are_valid(spec, model: type[BaseModel]):
    examples = spec["components"]["schemas"][model.__name__].get("examples")
    assert examples, model.__name__
    for example in examples:
        model.model_validate(example)


def test_every_answer_and_get_route_has_an_example(spec):
    missing = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path.startswith("/v2"):  # the Open Inference Protocol's own documents
                continue
            for media, content in op["responses"]["200"].get("content", {}).items():
                schema = content.get("schema", {})
                members = schema.get("anyOf", [schema])  # /v1/embeddings: vlserve's answer or OpenAI's
                if "example" not in content and not all(resolve(spec, m).get("examples") for m in members):
                    missing.append(f"{method} {path} {media}")
    assert not missing, missing
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert [m.split(";")[0] for m in metrics] == ["text/plain"]
    assert "vlserve_requests_total" in next(iter(metrics.values()))["example"]


def test_request_examples_are_valid():
    for model in (schemas.CaptionRequest, schemas.EmbeddingsRequest, schemas.ScoreRequest, schemas.RankRequest,
                  schemas.VqaRequest, schemas.CapfiltRequest, openai_front.OpenAIEmbeddingsRequest,
                  rerank_front.RerankRequest, chat_front.ChatRequest):
        for example in model.model_json_schema()["examples"]:
            model.model_validate(example)
