"""OpenAI's chat completions (`POST /v1/chat/completions`) with an `image_url` part, onto the
caption and VQA tasks. One user message, one image: its text decides the task.

- a question (ends with "?", or starts with a question word: what, is, how many, ...) -> VQA,
  on models that answer questions (their own mode: generated or classified answers);
- no text, or an instruction to describe ("describe ...", "caption ...") -> a caption;
- any other text -> a caption that continues it (the text is the caption prompt).

`n`, `max_tokens` / `max_completion_tokens`, `temperature` (0: greedy, else sampling),
`top_p`, `seed` and `stop` map onto the decoding options. Refused with a 400 naming the field:
system or assistant messages and multi-turn history, tools, more than one image, logprobs of
answers, beam captions or streams, top_logprobs. `stream: true`: chat_stream.py.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from ..engine.generation.params import MAX_RETURN, RANGES
from ..errors import InvalidInputError
from .chat_stream import cut_at_stop, stream_response
from .openai_front import content_item
from .schemas import ERRORS, TEXT, TIMEOUT, documented, server_limit

router = APIRouter()
QUESTION = re.compile(r"^(what|which|who|whose|where|when|why|how|is|are|was|were|does|do|did|can|could|will|"
                      r"would|should|has|have)\b", re.I)
DESCRIBE = re.compile(r"^(please\s+)?(describe|caption|write a caption)\b", re.I)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra=documented(
        {"model": "blip-toy", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what color is the circle?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}]}))
    model: str | None = Field(None, description="model name (GET /v1/models); default: the one loaded model that "
                              "serves the task")
    messages: list[dict] = Field(min_length=1, description="one user message: one image_url part (a data: URI, or "
                                 "an http(s) URL where the server fetches them) and optionally a text, a question "
                                 f"(VQA) or else a caption prompt; {TEXT}")
    n: int = Field(1, ge=1, description=f"captions to return (VQA: 1), 1 to {MAX_RETURN}")
    max_tokens: int | None = Field(None, ge=1, description="tokens to generate at most; "
                                   f"{server_limit('max_new_tokens')}; default: the model's")
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens (wins "
                                              "over it); default: max_tokens")
    temperature: float | None = Field(None, ge=0, description="0: greedy; above 0: sampling at this temperature, "
                                      f"up to {RANGES['temperature'][1]:g}; default: the model's")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling: keep the likeliest tokens that "
                                "hold this much probability, in (0, 1]; default: the model's")
    seed: int | None = Field(None, ge=0, description=f"the sampling seed, 0 to {RANGES['seed'][1]}; default: the "
                             "model's, else a fresh one each time")
    stop: str | list[str] | None = Field(None, description=f"text(s) the output is cut at; {TEXT}; default: none")
    stream: bool = Field(False, description="server-sent events: a caption token by token (beams and answers: "
                         "one chunk)")
    stream_options: dict | None = Field(None, description="include_usage: a last chunk with the usage; "
                                        "default: none")
    logprobs: bool = Field(False, description="each caption token's model log-probability (greedy or sampled "
                           "captions, not streamed)")
    top_logprobs: int | None = Field(None, ge=0, description="0 only: alternatives are not served; default: none")
    timeout_s: float | None = Field(None, ge=0.01, description=f"vlserve's {TIMEOUT}")


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"]
    logprobs: dict | None = Field(None, description="with logprobs: {content: [{token, logprob, bytes, top_logprobs}]}")


class ChatUsage(BaseModel):
    prompt_tokens: int = Field(description="the text's tokens (the image counts none)")
    completion_tokens: int
    total_tokens: int


class ChatResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "chatcmpl-5f0c", "object": "chat.completion", "created": 1767225600, "model": "blip-toy",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "red"}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}]})
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage


IGNORED = {"user", "frequency_penalty", "presence_penalty", "response_format", "service_tier", "store", "metadata"}


def parse(body: ChatRequest) -> tuple[str, str]:
    """(image reference, the user's text) of the one user message, or a 400 naming the field."""
    unknown = sorted(set(body.model_extra or {}) - IGNORED)
    if unknown:
        raise InvalidInputError(f"'{unknown[0]}' is not served by this model's chat front", param=unknown[0])
    if body.logprobs and body.stream:
        raise InvalidInputError("logprobs are not served with stream", param="logprobs")
    if body.top_logprobs:
        raise InvalidInputError("top_logprobs above 0 are not served", param="top_logprobs")
    if len(body.messages) != 1 or body.messages[0].get("role") != "user":
        raise InvalidInputError("send one user message with one image: system prompts and multi-turn history "
                                "are not served", param="messages")
    content = body.messages[0].get("content")
    parts = [content] if isinstance(content, str) else content if isinstance(content, list) else None
    if parts is None:
        raise InvalidInputError("content is a string or a list of parts", param="messages[0].content")
    items = [content_item(p, f"messages[0].content[{i}]") for i, p in enumerate(parts)]
    images = [v for k, v in items if k == "image"]
    if len(images) != 1:
        raise InvalidInputError(f"the message holds {len(images)} images; send exactly one",
                                param="messages[0].content")
    return images[0], " ".join(v.strip() for k, v in items if k == "text").strip()


def task_of(text: str) -> str:
    if text.endswith("?") or QUESTION.match(text):
        return "vqa"
    return "caption"


def _logprobs(decode, tokens: list[int], seen: list) -> dict:
    """OpenAI's logprobs content from the listener's (token, log-prob so far) per position."""
    out, before = [], 0.0
    for token, entry in zip(tokens, seen):
        if entry is None or entry[0] != token:
            raise RuntimeError("the decode loop's tokens and the caption disagree")
        piece = decode([token])
        out.append({"token": piece, "logprob": entry[1] - before, "bytes": list(piece.encode()), "top_logprobs": []})
        before = entry[1]
    return {"content": out}


async def _chat(request: Request):
    from ..tasks.caption import caption as caption_task
    from ..tasks.vqa import vqa as vqa_task
    from .decoding import decode_images, read_images
    from .routes import _generation, _read

    gw, body, _ = await _read(request, ChatRequest)
    image, text = parse(body)
    task = task_of(text)
    if task == "vqa" and body.n != 1:
        raise InvalidInputError("a question gets one answer: n must be 1", param="n")
    if task == "vqa" and body.logprobs:
        raise InvalidInputError("logprobs are served for captions, not answers", param="logprobs")
    images = await read_images(gw, [image], {}, "messages[0].content.image")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    fields = {"max_new_tokens": body.max_completion_tokens or body.max_tokens, "seed": body.seed}
    if body.temperature is not None:
        fields |= {"do_sample": body.temperature > 0} | ({"temperature": body.temperature}
                                                           if body.temperature > 0 else {})
    if body.top_p is not None:
        fields |= {"do_sample": True, "top_p": body.top_p}
    fields = {k: v for k, v in fields.items() if v is not None}

    async def work(served, models):
        model = served["model"]
        pixels = await decode_images(gw, model, images)
        prompt_tokens = sum(await gw.in_thread(model.engine.check_texts, [text], "messages[0].content")) if text \
            else 0
        if task == "vqa":
            params = _generation(gw, model.vqa_defaults, fields)

            async def run(listener=None):
                answer = (await vqa_task(models["model"], pixels, [text], params=params))[0]
                return [(answer.text, answer.tokens)]
        else:
            prompt = None if not text or DESCRIBE.match(text) else text
            params = _generation(gw, model.caption_defaults, fields | {"num_return": body.n})
            if body.logprobs and params.num_beams > 1:
                raise InvalidInputError(f"model '{model.name}' captions with beam search, which has no per-token "
                                        "log-probabilities here", param="logprobs")

            async def run(listener=None):
                caps = await caption_task(models["model"], pixels, prompt=prompt, params=params,
                                          listener=listener and (lambda image, *token: listener(*token)))
                return [(c.text, c.tokens) for c in caps[0]]
        limit = params.max_new_tokens
        if body.stream:
            return stream_response(model.name, body.n if task == "caption" else 1, run,
                                   decode=model.engine.decode_text, stops=stops, limit=limit,
                                   include_usage=bool((body.stream_options or {}).get("include_usage")),
                                   prompt_tokens=prompt_tokens)
        seen: dict = {}  # (sample, position) -> (token, log-prob so far), from the decode loop's thread
        outs = await run((lambda sample, pos, token, lp: seen.__setitem__((sample, pos), (token, lp)))
                         if body.logprobs else None)
        choices = []
        for i, (content, tokens) in enumerate(outs):
            content, stopped = cut_at_stop(content, stops)
            finish = "stop" if stopped or len(tokens) < limit else "length"
            logprobs = _logprobs(model.engine.decode_text, tokens, [seen.get((i, j)) for j in range(len(tokens))]) \
                if body.logprobs else None
            choices.append(ChatChoice(index=i, message=ChatMessage(content=content), finish_reason=finish,
                                      logprobs=logprobs))
        completion = sum(len(t) for _, t in outs)
        return ChatResponse(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model.name,
                            choices=choices, usage=ChatUsage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                                                             total_tokens=prompt_tokens + completion))

    return await gw.run(request, "chat", body.timeout_s, work, model=(body.model, task))


router.add_api_route("/v1/chat/completions", _chat, methods=["POST"], response_model=ChatResponse, responses=ERRORS,
                     summary="OpenAI chat completions over one image: questions -> VQA, else a caption",
                     openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/ChatRequest"}}}}})
