"""OpenAI's embeddings body on `/v1/embeddings` (the `openai` SDK, LangChain, LlamaIndex), onto
the same embed task as vlserve's own body; the route tells them apart by `input`/`messages`.

Inputs, each item one embedding, in order:
- `input`: a string, or a list of strings and of items as vLLM, SGLang, infinity and Jina
  send images: `{"text": ...}`, `{"image": url-or-data-URI}`, OpenAI content parts
  `{"type": "text", "text": ...}` / `{"type": "image_url", "image_url": {"url": ...}}`;
- or `messages` (vLLM's chat form): user messages whose content is a string or one part.
Token ids (OpenAI accepts them) are refused: a token id means nothing across tokenizers.
`encoding_format: "base64"` is OpenAI's: the float32 values, little-endian, base64.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidInputError
from .schemas import TEXTS, TIMEOUT, TINY_PNG, OpenAIModel, documented, server_limit



class OpenAIEmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=documented(
        {"model": "blip-toy", "input": ["a small red circle", {"image": f"data:image/png;base64,{TINY_PNG}"}]}))
    model: str | None = Field(None, description="model name (GET /v1/models); default: the one loaded model that "
                              "serves embed")
    input: str | list[Any] | None = Field(None, description='a text, or a list of texts and image items ({"image": '
                                          'url or data: URI}, OpenAI content parts); '
                                          f"{TEXTS}; images: {server_limit('max_images')}; default: none (give input "
                                          "or messages)")
    messages: list[dict] | None = Field(None, description="instead of input: user messages of one part each; "
                                        "default: none")
    encoding_format: Literal["float", "base64"] = Field("float", description="float: a list of numbers; base64: "
                                                        "the float32 values, little-endian, in base64")
    dimensions: int | None = Field(None, ge=1, description="accepted only when it is the model's own size; "
                                   "default: the model's")
    user: str | None = Field(None, description="accepted and ignored; default: none")
    timeout_s: float | None = Field(None, ge=0.01, description=f"vlserve's {TIMEOUT}")


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    prompt_tokens: int = Field(description="text tokens, special tokens included; images count none")
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"object": "list", "model": "blip-toy", "usage": {"prompt_tokens": 7, "total_tokens": 7}, "data": [
            {"object": "embedding", "index": 0, "embedding": [0.6, -0.4, 0.6, 0.35]},
            {"object": "embedding", "index": 1, "embedding": [0.5, -0.5, 0.5, 0.5]}]}]})
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


def openai_models(described: list[dict], created: int) -> list[OpenAIModel]:
    """OpenAI's model list (`client.models.list()`): every model folder but the skipped ones."""
    return [OpenAIModel(id=m["name"], created=created) for m in described if m["state"] != "skipped"]


def is_openai_body(data: dict) -> bool:
    return "input" in data or "messages" in data


def items_of(body: OpenAIEmbeddingsRequest) -> list[tuple[str, str]]:
    """("text" | "image", value) per embedding asked for, in order."""
    if (body.input is None) == (body.messages is None):
        raise InvalidInputError("give exactly one of input and messages", param="input")
    if body.messages is not None:
        return [_message(m, f"messages[{i}]") for i, m in enumerate(body.messages)] or _empty("messages")
    if isinstance(body.input, str):
        return [("text", body.input)]
    return [content_item(x, f"input[{i}]") for i, x in enumerate(body.input)] or _empty("input")


def _empty(param: str):
    raise InvalidInputError(f"'{param}' is empty: nothing to embed", param=param)


def _message(message: dict, param: str) -> tuple[str, str]:
    if message.get("role") != "user":
        raise InvalidInputError("only user messages can be embedded", param=f"{param}.role")
    content = message.get("content")
    if isinstance(content, list):
        if len(content) != 1:
            raise InvalidInputError("a message to embed holds one part (an image or a text): this model embeds "
                                    "images and texts apart; send several messages", param=f"{param}.content")
        content = content[0]
    return content_item(content, f"{param}.content")


def content_item(item: Any, param: str) -> tuple[str, str]:
    if isinstance(item, str):
        return "text", item
    if isinstance(item, int) or (isinstance(item, list) and all(isinstance(t, int) for t in item)):
        raise InvalidInputError("token ids are not accepted: send the text", param=param)
    if isinstance(item, dict):
        kind = item.get("type")
        if kind in (None, "text") and isinstance(item.get("text"), str) and set(item) <= {"type", "text"}:
            return "text", item["text"]
        if kind is None and isinstance(item.get("image"), str) and set(item) == {"image"}:
            return "image", item["image"]
        if kind == "image_url" and set(item) == {"type", "image_url"}:
            url = item["image_url"]
            url = url.get("url") if isinstance(url, dict) else url
            if isinstance(url, str):
                return "image", url
    raise InvalidInputError('an input item is a text, {"text": ...}, {"image": url or data URI}, or a content '
                            'part {"type": "text" | "image_url", ...}', param=param)


def encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


async def embed_openai(request, gw, body: OpenAIEmbeddingsRequest) -> OpenAIEmbeddingsResponse:
    """One embedding per item, images through the vision graph and texts through the text
    graph of the same model, in one request (batched with everyone else's)."""
    from ..tasks.retrieval import embed as embed_task
    from .decoding import decode_images, read_images

    items = items_of(body)
    texts = [v for k, v in items if k == "text"]
    images = await read_images(gw, [v for k, v in items if k == "image"], {}, "input.images")

    async def work(served, models):
        model = served["model"]
        dim = model.capabilities.embedding_dim
        if body.dimensions is not None and body.dimensions != dim:
            raise InvalidInputError(f"model '{model.name}' gives {dim}-dimensional embeddings; dimensions cannot "
                                    "change that", param="dimensions")
        tokens = await gw.in_thread(model.engine.check_texts, texts, "input.texts") if texts else []
        pixels = await decode_images(gw, model, images) if images else None
        img, txt = await embed_task(models["model"], pixels, texts or None)
        rows = {"image": iter(img.numpy() if img is not None else ()), "text": iter(txt.numpy() if txt is not None
                                                                                    else ())}
        data = [OpenAIEmbedding(index=i, embedding=encode(next(rows[kind]), body.encoding_format))
                for i, (kind, _) in enumerate(items)]
        return OpenAIEmbeddingsResponse(data=data, model=model.name,
                                        usage=OpenAIUsage(prompt_tokens=sum(tokens), total_tokens=sum(tokens)))

    return await gw.run(request, "embed", body.timeout_s, work, model=(body.model, "embed"))
