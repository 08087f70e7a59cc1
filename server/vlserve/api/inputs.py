"""Reading request bodies (JSON or multipart) into wire schemas, and images into bytes.

The body's size and arrival time are bounded before it gets here (middleware.RequestGuard).
Parsing and validation run in the preprocessing pool, never on the event loop: a large
body costs a thread, not every other request's latency. Validation is strict: JSON types
are taken as sent (`seed: false` and `rank_answers: 0` are refused, not coerced), and a
multipart field is plain text converted to its field's type (never JSON-decoded).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import types
import typing
from typing import Callable, TypeVar

from fastapi import Request
from starlette.exceptions import HTTPException
from pydantic import BaseModel, ValidationError

from ..errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaError
from ..settings import Settings
from .errors import SchemaError
from .fetch import fetch_image

M = TypeVar("M", bound=BaseModel)
DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)$", re.S)
IMAGE_FIELDS = ("images", "query_image", "candidate_images")
IMAGE_KEYS = ("image", "url")  # an image reference inside an item (OpenAI-style bodies): no text limit
IMAGE_TYPES = ("image/jpeg", "image/jpg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff")
MAX_DEPTH = 6  # values nest: capfilt texts[i][j] three deep; OpenAI messages[i].content[j].image_url.url six
INTEGER = re.compile(r"[+-]?\d{1,20}")
IMAGE_FILE = re.compile(r"\.(png|jpe?g|webp|gif|bmp|tiff?)$", re.I)  # base64 never holds a "."
MAX_LISTED = 5  # schema problems named in one error message

UPLOAD = "upload://"  # how a multipart file stands in an image field until it is read


async def read_request(request: Request, schema: type[M], settings: Settings, in_thread,
                       variant: tuple[Callable[[dict], bool], type[BaseModel]] | None = None
                       ) -> tuple[M, dict[str, bytes]]:
    """The validated body, and the bytes of any uploaded files (keyed by their stand-ins).
    `in_thread(fn, *args)` runs CPU work off the event loop. `variant` (is_it, schema): a
    second JSON body on the same route (another protocol's), chosen by its fields."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    uploads: dict[str, bytes] = {}
    if kind == "application/json" or kind == "":
        raw = await request.body()
        return await in_thread(_parse_json, raw, schema, settings, variant), uploads
    if kind == "multipart/form-data":
        fields = await _read_form(request, settings, uploads)
        return await in_thread(_parse_form, fields, schema, settings), uploads
    raise UnsupportedMediaError(f"content type '{kind}' is not accepted; send application/json or "
                                "multipart/form-data")


def _parse_json(raw: bytes, schema: type[M], settings: Settings, variant=None) -> M:
    try:
        data = json.loads(raw or b"null")
    except RecursionError:
        raise InvalidInputError("body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers past Python's digit limit
        raise InvalidInputError(f"body is not valid JSON: {_plain(str(exc))}") from None
    if not isinstance(data, dict):
        raise InvalidInputError("body must be a JSON object")
    if variant is not None and variant[0](data):
        schema = variant[1]
    return _validate(schema, data, settings)


def _parse_form(fields: list[tuple[str, str]], schema: type[M], settings: Settings) -> M:
    """Repeated fields become lists where the schema has a list; values take the field's type."""
    data: dict = {}
    for key, value in fields:
        data.setdefault(key, []).append(value)
    out = {}
    for key, values in data.items():
        field = schema.model_fields.get(key)
        if field is None:
            out[key] = values[0]  # validation names the unknown field
            continue
        item_type, is_list = _scalar_type(field.annotation)
        if not is_list and len(values) > 1:
            raise InvalidInputError(f"field '{key}' was given {len(values)} times", param=key)
        values = [v if v.startswith(UPLOAD) else _convert(v, item_type) for v in values]
        out[key] = values if is_list else values[0]
    return _validate(schema, out, settings)


def _validate(schema: type[M], data: dict, settings: Settings) -> M:
    """Valid Unicode first (an error message may quote a field name), then the schema
    (422), then the server's limits on the texts."""
    check_strings(data, settings, limits=False)
    try:
        body = schema.model_validate(data, strict=True)
    except ValidationError as exc:  # every problem named (a typo's field and the field it missed)
        problems = [(".".join(str(p) for p in e["loc"]) or "body", e["msg"]) for e in exc.errors()]
        listed = "; ".join(f"{where}: {msg}" for where, msg in problems[:MAX_LISTED])
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        param = problems[0][0] if problems[0][0] != "body" else None
        raise SchemaError(listed + more, param=param) from None
    check_strings(data, settings)
    return body


def _scalar_type(annotation) -> tuple[type | None, bool]:
    """(the type of one value, whether the field is a list) for a form field."""
    kind = annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # X | None
        kind = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(kind) is list:
        inner = typing.get_args(kind)[0]
        return (inner if inner in (int, float, bool, str) else None), True
    return (kind if kind in (int, float, bool, str) else None), False


def _convert(value: str, kind: type | None):
    """A form value as its field's type; left as text when it does not parse (validation says why)."""
    if kind is int and INTEGER.fullmatch(value.strip()):
        return int(value)
    if kind is float:
        try:
            return float(value)
        except ValueError:
            return value
    if kind is bool and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def check_strings(data: dict, settings: Settings, limits: bool = True) -> None:
    """Every string is valid Unicode (no lone surrogates) and (with `limits`), outside image
    fields, at most max_text_chars long; every list of texts at most max_texts long. Cheap,
    and done before any tokeniser sees the text."""
    stack = [(value, key, 1) for key, value in data.items()]
    while stack:
        value, param, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidInputError("body nests lists too deeply", param=param)
        image = param.split("[")[0] in IMAGE_FIELDS or param.rsplit(".", 1)[-1] in IMAGE_KEYS
        if isinstance(value, str):
            if limits and not image and len(value) > settings.max_text_chars:
                raise InvalidInputError(f"text is {len(value)} characters; the limit is {settings.max_text_chars}",
                                        param=param)
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInputError("text is not valid Unicode (lone surrogate)", param=param) from None
        elif isinstance(value, list):
            if limits and not image and len(value) > settings.max_texts:
                raise PayloadTooLargeError(f"{len(value)} items in '{param}'; the limit is {settings.max_texts}",
                                           param=param)
            stack += [(v, f"{param}[{i}]", depth + 1) for i, v in enumerate(value)]
        elif isinstance(value, dict):
            stack += [(v, f"{param}.{_plain(str(k))}", depth + 1) for k, v in value.items()]


def _plain(text: str) -> str:
    """Text safe to put in an error message (lone surrogates replaced)."""
    return text.encode("utf-8", "replace").decode("utf-8")


async def _read_form(request: Request, settings: Settings, uploads: dict) -> list[tuple[str, str]]:
    """Files become image bytes (their stand-ins in the field list); other fields stay text."""
    try:
        form = await request.form(max_files=settings.max_images + 1, max_fields=settings.max_texts * 4 + 64)
    except HTTPException as exc:  # starlette's parser refusal, as the same 413 a JSON body gets
        if "Too many files" in str(exc.detail):
            raise PayloadTooLargeError(f"more than {settings.max_images} images; the limit is {settings.max_images}",
                                       param="images") from None
        if "Too many fields" in str(exc.detail):
            raise PayloadTooLargeError(f"too many form fields; the limit is {settings.max_texts} texts",
                                       param="texts") from None
        raise InvalidInputError(f"malformed multipart body: {exc.detail}") from None
    fields = []
    for key, value in form.multi_items():
        if hasattr(value, "read"):  # an uploaded file
            ref = f"{UPLOAD}{len(uploads)}"
            uploads[ref] = await value.read()
            value = ref
        fields.append((key, value))
    return fields


async def image_bytes(ref: str, settings: Settings, param: str, uploads: dict[str, bytes]) -> bytes:
    if ref in uploads:
        data = uploads[ref]
    elif ref.startswith("data:"):
        m = DATA_URI.match(ref)
        if not m:
            raise InvalidInputError("malformed data: URI (expected data:<type>;base64,<data>)", param=param)
        mime = (m.group("mime") or "").lower()
        if mime not in IMAGE_TYPES:
            raise InvalidInputError(f"data: URI of type '{mime or 'text/plain'}' is not an image; "
                                    f"accepted: {', '.join(IMAGE_TYPES)}", param=param)
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
    """Standard or URL-safe base64, padding optional."""
    data = "".join(text.split())
    if "-" in data or "_" in data:
        data = data.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError):
        hint = " (a file path? send files as multipart: curl -F images=@cat.png)" if _looks_like_path(text) else ""
        raise InvalidInputError(f"invalid base64 image data{hint}", param=param) from None


def _looks_like_path(text: str) -> bool:
    return len(text) < 4096 and IMAGE_FILE.search(text.strip()) is not None


async def images_of(refs: list[str], settings: Settings, uploads: dict[str, bytes], param: str = "images"):
    if len(refs) > settings.max_images:
        raise PayloadTooLargeError(f"{len(refs)} images; the limit is {settings.max_images}", param=param)
    return [await image_bytes(r, settings, f"{param}[{i}]", uploads) for i, r in enumerate(refs)]
