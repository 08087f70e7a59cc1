"""Reading request bodies (JSON or multipart) into wire schemas, and images into bytes."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from ..errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaError
from ..settings import Settings
from .errors import SchemaError
from .fetch import fetch_image

M = TypeVar("M", bound=BaseModel)
DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)$", re.S)
IMAGE_FIELDS = ("images", "query_image", "candidate_images")


UPLOAD = "upload://"  # how a multipart file stands in an image field until it is read


async def read_request(request: Request, schema: type[M], settings: Settings) -> tuple[M, dict[str, bytes]]:
    """The validated body, and the bytes of any uploaded files (keyed by their stand-ins)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > settings.max_body_bytes:
        raise PayloadTooLargeError(f"request body is {length} bytes; the limit is {settings.max_body_bytes}")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    uploads: dict[str, bytes] = {}
    if kind == "application/json" or kind == "":
        raw = await _read_limited(request, settings.max_body_bytes)
        try:
            data = json.loads(raw or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidInputError("body must be a JSON object")
    elif kind == "multipart/form-data":
        data = await _read_form(request, schema, settings, uploads)
    else:
        raise UnsupportedMediaError(f"content type '{kind}' is not accepted; send application/json or "
                                    "multipart/form-data")
    try:
        return schema.model_validate(data), uploads
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise SchemaError(f"{param or 'body'}: {first['msg']}", param=param) from None


async def _read_limited(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
    return bytes(body)


async def _read_form(request: Request, schema: type[BaseModel], settings: Settings, uploads: dict) -> dict:
    """Files become image bytes; repeated fields become lists where the schema has a list."""
    form = await request.form(max_files=settings.max_images + 1, max_fields=settings.max_texts * 4 + 64)
    data: dict = {}
    for key, value in form.multi_items():
        if hasattr(value, "read"):  # an uploaded file
            ref = f"{UPLOAD}{len(uploads)}"
            uploads[ref] = await value.read()
            value = ref
        data.setdefault(key, []).append(value)
    out = {}
    for key, values in data.items():
        field = schema.model_fields.get(key)
        is_list = field is not None and "list" in str(field.annotation)
        if not is_list and len(values) > 1:
            raise InvalidInputError(f"field '{key}' was given {len(values)} times", param=key)
        out[key] = values if is_list else values[0]
    return out


async def image_bytes(ref: str, settings: Settings, param: str, uploads: dict[str, bytes]) -> bytes:
    if ref in uploads:
        data = uploads[ref]
    elif ref.startswith("data:"):
        m = DATA_URI.match(ref)
        if not m:
            raise InvalidInputError("malformed data: URI (expected data:<type>;base64,<data>)", param=param)
        data = _b64(m.group("data"), param)
    elif ref.startswith(("http://", "https://")):
        data = await fetch_image(ref, settings, param)
    else:
        data = _b64(ref, param)
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLargeError(f"image is {len(data)} bytes; the limit is {settings.max_image_bytes}",
                                   param=param)
    return data


def _b64(text: str, param: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("invalid base64 image data", param=param) from None


async def images_of(refs: list[str], settings: Settings, uploads: dict[str, bytes], param: str = "images"):
    if len(refs) > settings.max_images:
        raise PayloadTooLargeError(f"{len(refs)} images; the limit is {settings.max_images}", param=param)
    return [await image_bytes(r, settings, f"{param}[{i}]", uploads) for i, r in enumerate(refs)]


def check_texts(texts: list[str] | None, settings: Settings, param: str) -> None:
    if not texts:
        return
    if len(texts) > settings.max_texts:
        raise PayloadTooLargeError(f"{len(texts)} items in '{param}'; the limit is {settings.max_texts}", param=param)
    for i, t in enumerate(texts):
        if len(t) > settings.max_text_chars:
            raise InvalidInputError(f"text is {len(t)} characters; the limit is {settings.max_text_chars}",
                                    param=f"{param}[{i}]")
