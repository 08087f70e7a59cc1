"""KServe v2 / Open Inference Protocol (REST) on `/v2`, as `tritonclient.http` and KServe
clients speak it, with Triton's binary tensor extension, onto the same tasks.

Each model serves its tasks as named tensors (BYTES are raw image bytes, or in JSON UTF-8
text; an image in JSON may be base64 or a data URI):

    caption   IMAGE [N]                -> CAPTION BYTES [N], LOGPROB FP32 [N]
    embed     IMAGE [N] and/or TEXT [M] -> IMAGE_EMBEDDING FP32 [N, D], TEXT_EMBEDDING FP32 [M, D]
    score     IMAGE [N], TEXT [M]      -> ITC FP32 [N, M] (and ITM FP32 [N, M] where the model has it)
    vqa       IMAGE [N], QUESTION [N]  -> ANSWER BYTES [N]

The request's `parameters.task` picks one; without it the inputs do (IMAGE: caption, IMAGE +
TEXT: score, IMAGE + QUESTION: vqa, TEXT: embed). Other request parameters are the task's
decoding options (max_new_tokens, num_beams, ...). Errors are `{"error": "..."}`.
"""

from __future__ import annotations

import json
import struct

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from .. import __version__
from ..engine.generation.params import GenerationOptions
from ..errors import InvalidInputError, ModelNotFoundError, VlserveError
from .errors import status_of
from .schemas import ErrorResponse

router = APIRouter(prefix="/v2")


class V2Error(BaseModel):
    error: str


# the protocol's errors; those the middleware answers before a route runs keep vlserve's shape
ERRORS = {code: {"model": V2Error} for code in (400, 404, 415, 500, 503, 504)} | \
    {code: {"model": ErrorResponse} for code in (401, 408, 413)}
HEADER = "inference-header-content-length"
SIGNATURES = {  # task -> (inputs, outputs), each (name, datatype, shape)
    "caption": ([("IMAGE", "BYTES", [-1])], [("CAPTION", "BYTES", [-1]), ("LOGPROB", "FP32", [-1])]),
    "embed": ([("IMAGE", "BYTES", [-1]), ("TEXT", "BYTES", [-1])],
              [("IMAGE_EMBEDDING", "FP32", [-1, -1]), ("TEXT_EMBEDDING", "FP32", [-1, -1])]),
    "score": ([("IMAGE", "BYTES", [-1]), ("TEXT", "BYTES", [-1])],
              [("ITC", "FP32", [-1, -1]), ("ITM", "FP32", [-1, -1])]),
    "vqa": ([("IMAGE", "BYTES", [-1]), ("QUESTION", "BYTES", [-1])], [("ANSWER", "BYTES", [-1])]),
}
BY_INPUTS = {frozenset({"IMAGE"}): "caption", frozenset({"IMAGE", "TEXT"}): "score",
             frozenset({"IMAGE", "QUESTION"}): "vqa", frozenset({"TEXT"}): "embed"}


def _error(exc: Exception) -> JSONResponse:
    code = status_of(exc) if isinstance(exc, VlserveError) else 500
    message = exc.message if isinstance(exc, VlserveError) else "internal server error"
    return JSONResponse({"error": message}, status_code=code)


def _served(request: Request, name: str):
    models = request.app.state.gateway.repository.models
    if name not in models:
        raise ModelNotFoundError(f"unknown model '{name}'", param="model")
    return models[name]


@router.get("", summary="Open Inference Protocol: server metadata", responses=ERRORS)
async def server_metadata():
    return {"name": "vlserve", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/health/live", responses=ERRORS)
async def live():
    return {"live": True}


@router.get("/health/ready", responses=ERRORS)
async def ready(request: Request):
    ok = request.app.state.gateway.ready
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


async def metadata(request: Request, name: str, version: str | None = None):
    try:
        served = _served(request, name)
    except VlserveError as exc:
        return _error(exc)
    tasks = [t for t in served.tasks if t in SIGNATURES]
    tensors = {kind: {n: {"name": n, "datatype": d, "shape": s} for t in tasks
                      for n, d, s in SIGNATURES[t][kind == "outputs"]} for kind in ("inputs", "outputs")}
    return {"name": served.name, "versions": ["1"], "platform": f"vlserve_{served.describe().get('family')}",
            "inputs": list(tensors["inputs"].values()), "outputs": list(tensors["outputs"].values()),
            "parameters": {"tasks": {t: {kind: [n for n, _, _ in SIGNATURES[t][kind == "outputs"]]
                                         for kind in ("inputs", "outputs")} for t in tasks}}}


async def model_ready(request: Request, name: str, version: str | None = None):
    try:
        served = _served(request, name)
    except VlserveError as exc:
        return _error(exc)
    ok = served.describe()["state"] == "ready"
    return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 400)


def parse_body(raw: bytes, header: str | None) -> tuple[dict, dict[str, list]]:
    """(the request JSON, input name -> its flat values: bytes (binary) or str (JSON) for BYTES,
    numbers otherwise)."""
    size = int(header) if header and header.isdigit() else len(raw)
    try:
        data = json.loads(raw[:size] or b"null")
    except (ValueError, RecursionError):
        raise InvalidInputError("the inference request is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
        raise InvalidInputError("an inference request has a list of inputs", param="inputs")
    offset, values = size, {}
    for i, tensor in enumerate(data["inputs"]):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InvalidInputError("each input has a name, a datatype, a shape and data", param=f"inputs[{i}]")
        name, kind = tensor["name"], tensor.get("datatype")
        binary = (tensor.get("parameters") or {}).get("binary_data_size")
        if binary is not None:
            if not isinstance(binary, int) or binary < 0 or offset + binary > len(raw):
                raise InvalidInputError(f"input '{name}': binary data truncated or missing", param=name)
            chunk, offset = raw[offset: offset + binary], offset + binary
            values[name] = _bytes_elements(chunk, name) if kind == "BYTES" else \
                np.frombuffer(chunk, dtype={"FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}[kind]).tolist()
        else:
            flat = np.asarray(tensor.get("data", []), dtype=object).reshape(-1).tolist()
            values[name] = flat  # BYTES in JSON: text (an image: base64 or a data URI)
    return data, values


def _bytes_elements(chunk: bytes, name: str) -> list[bytes]:
    out, i = [], 0
    while i < len(chunk):
        if i + 4 > len(chunk):
            raise InvalidInputError(f"input '{name}': truncated BYTES element", param=name)
        (n,) = struct.unpack_from("<I", chunk, i)
        if i + 4 + n > len(chunk):
            raise InvalidInputError(f"input '{name}': truncated BYTES element", param=name)
        out.append(chunk[i + 4: i + 4 + n])
        i += 4 + n
    return out


def encode_outputs(outputs: dict[str, np.ndarray], request: dict, model: str) -> tuple[bytes, dict]:
    """The response body and headers: binary where the request asked for it (per output, or
    `binary_data_output` for all), JSON otherwise."""
    wanted = {o["name"]: (o.get("parameters") or {}).get("binary_data") for o in request.get("outputs") or []}
    all_binary = bool((request.get("parameters") or {}).get("binary_data_output"))
    tensors, blobs = [], []
    for name, array in outputs.items():
        if wanted and name not in wanted:
            continue
        kind = "BYTES" if array.dtype == object else "FP32"
        entry = {"name": name, "datatype": kind, "shape": list(array.shape)}
        if wanted.get(name, all_binary):
            blob = b"".join(struct.pack("<I", len(v)) + v for v in array.reshape(-1)) if kind == "BYTES" \
                else array.astype("<f4").tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = [v.decode() for v in array.reshape(-1)] if kind == "BYTES" else \
                array.reshape(-1).tolist()
        tensors.append(entry)
    head = {"model_name": model, "model_version": "1", "outputs": tensors} | \
        ({"id": request["id"]} if "id" in request else {})
    body = json.dumps(head).encode()
    if not blobs:
        return body, {"content-type": "application/json"}
    return body + b"".join(blobs), {HEADER: str(len(body)), "content-type": "application/octet-stream"}


async def infer(request: Request, name: str, version: str | None = None):
    try:
        return await _infer(request, name)
    except VlserveError as exc:
        return _error(exc)


async def _infer(request: Request, name: str):
    from .kserve_tasks import run_task

    gw = request.app.state.gateway
    raw = await request.body()
    data, values = await gw.in_thread(parse_body, raw, request.headers.get(HEADER))
    params = dict(data.get("parameters") or {})
    for reserved in ("binary_data_output", "timeout", "priority", "sequence_id", "sequence_start", "sequence_end"):
        params.pop(reserved, None)
    task = params.pop("task", None) or BY_INPUTS.get(frozenset(values))
    if task not in SIGNATURES:
        raise InvalidInputError(f"cannot tell the task from inputs {sorted(values)}: name it in parameters.task "
                                f"({', '.join(SIGNATURES)})", param="parameters.task")
    unknown = set(params) - set(GenerationOptions.model_fields)
    if unknown:
        raise InvalidInputError(f"unknown parameter(s): {', '.join(sorted(unknown))}", param="parameters")
    outputs = await run_task(request, gw, name, task, values, params, data)
    body, headers = encode_outputs(outputs, data, name)
    kind = headers.pop("content-type")
    return Response(body, headers=headers, media_type=kind)


for path in ("/models/{name}", "/models/{name}/versions/{version}"):
    router.add_api_route(path, metadata, methods=["GET"], responses=ERRORS,
                         summary="Open Inference Protocol: model metadata")
    router.add_api_route(path + "/ready", model_ready, methods=["GET"], responses=ERRORS,
                         summary="Open Inference Protocol: model ready (400 while it is not)")
    router.add_api_route(path + "/infer", infer, methods=["POST"], responses=ERRORS,
                         summary="Open Inference Protocol: infer")
