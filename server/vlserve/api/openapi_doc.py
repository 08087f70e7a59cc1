"""The OpenAPI document. The routes parse their bodies themselves (api/inputs.py), so their
request schemas are added here: each JSON one, and for the routes that take uploads a
multipart one in which the image fields are files, so Swagger UI's "Try it out" can send them."""

from __future__ import annotations

from fastapi.openapi.utils import get_openapi

from . import schemas
from .chat_front import ChatRequest
from .inputs import IMAGE_FIELDS
from .openai_front import OpenAIEmbeddingsRequest
from .rerank_front import RerankRequest

BODIES = (schemas.CaptionRequest, schemas.EmbeddingsRequest, schemas.ScoreRequest, schemas.RankRequest,
          schemas.VqaRequest, schemas.CapfiltRequest, OpenAIEmbeddingsRequest, RerankRequest, ChatRequest)
FILE = {"type": "string", "format": "binary"}
REF = "#/components/schemas/{model}"
FORM = "Multipart"  # a form schema's name: its JSON schema's, and this


def form_ref(schema) -> dict:
    """What a route that reads multipart documents as that body (routes._doc)."""
    return {"$ref": REF.format(model=schema.__name__ + FORM)}


def form_schema(schema) -> dict:
    """`schema` as multipart/form-data: a field is text (a list: the field repeated), an image a
    file. Fields no form can carry (lists of lists) are left out: send those bodies as JSON."""
    doc = schema.model_json_schema(ref_template=REF)
    doc.pop("examples", None)  # they hold base64 images
    doc.pop("$defs", None)  # the JSON schema's, already among the components
    properties = {}
    for name, prop in doc["properties"].items():
        options = [o for o in prop.pop("anyOf", [prop]) if o.get("type") != "null"]  # a form field is absent
        if len(options) != 1 or options[0].get("items", {}).get("type") in ("array", "object"):
            continue
        kind = dict(options[0])
        if name in IMAGE_FIELDS:
            kind = {"type": "array", "items": FILE} if kind.get("type") == "array" else dict(FILE)
        kept = {k: v for k, v in prop.items() if k in ("title", "description", "minItems", "maxItems")
                or (k == "default" and v is not None)}
        properties[name] = {**kind, **kept}
    doc["required"] = [r for r in doc.get("required", []) if r in properties]
    doc["properties"] = {n: properties[n] for n in sorted(properties, key=lambda n: n not in doc["required"])}
    doc["title"] = schema.__name__ + FORM
    return doc


def build_openapi(app) -> dict:
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for schema in BODIES:
        doc = schema.model_json_schema(ref_template=REF)
        components.update(doc.pop("$defs", {}))
        components[schema.__name__] = doc
    by_name = {schema.__name__ + FORM: schema for schema in BODIES}
    for operation in (op for ops in spec["paths"].values() for op in ops.values()):
        form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
        if form is not None:  # the routes that read uploads
            name = form["schema"]["$ref"].rsplit("/", 1)[1]
            components[name] = form_schema(by_name[name])
    return spec
