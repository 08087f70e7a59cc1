"""Wire schemas of the v1 HTTP API (pydantic). Images travel as base64 strings or `data:`
URIs (or http(s) URLs when the server allows fetching); multipart uploads carry them as
files instead. Defaults not given here come from the model's model.toml."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

from ..engine.family import VQA_MODES
from ..engine.generation.params import MAX_RETURN, MEANINGS, GenerationOptions, GenerationParams, default_note, shown
from ..settings import MiB, Settings
from ..tasks import defaults

ImageRef = str  # base64, data: URI, or (when enabled) an http(s) URL

TINY_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


def server_limit(name: str) -> str:
    """'server limit, default N (VLSERVE_NAME)', N read from the Settings field's default."""
    value = Settings.model_fields[name].default
    value = f"{value // MiB} MiB" if name.endswith("_bytes") and value % MiB == 0 else shown(value)
    return f"server limit, default {value} ({Settings.model_config['env_prefix']}{name.upper()})"


IMAGES = ("base64, a data: URI, or (where the server fetches them) an http(s) URL; as multipart, files. "
          f"Images: {server_limit('max_images')}; bytes each: {server_limit('max_image_bytes')}; pixels each: "
          f"{server_limit('max_pixels')}; pixels in all: {server_limit('max_request_pixels')}")
TEXT = (f"characters: {server_limit('max_text_chars')}; tokens: the model's max_text_tokens (GET /v1/models)")
TEXTS = f"texts: {server_limit('max_texts')}; {TEXT}"
TIMEOUT = (f"deadline in seconds, which may only shorten the server's: {server_limit('request_timeout_s')}; "
           "default: the server's")


def documented(*examples):
    """A request schema's json_schema_extra: its examples, and each field's default named in
    its description (where the description does not already say what unset means)."""
    def extra(schema: dict) -> None:
        if examples:
            schema["examples"] = list(examples)
        for prop in schema.get("properties", {}).values():
            described = prop.get("description", "")
            if "default" in prop and "default" not in described:
                prop["description"] = f"{described}; default {json.dumps(prop['default'])}".lstrip("; ")
    return extra


def _answer(*examples) -> ConfigDict:
    """A response schema's examples (tests/api/test_openapi_document.py validates them)."""
    return ConfigDict(json_schema_extra={"examples": list(examples)})


def _config(*examples) -> ConfigDict:
    """Unknown fields and NaN/infinity are refused; the route validates strictly (api/inputs.py)."""
    return ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra=documented(*examples))


GEN = GenerationOptions.model_fields  # the generation fields' one declaration
VqaMode = Literal[VQA_MODES]  # type: ignore[valid-type]
SERVER_LIMITS = {"max_new_tokens": "max_new_tokens", "num_beams": "max_beams"}  # field -> its Settings limit


def _gen(name: str, task: str, task_defaults: GenerationParams) -> FieldInfo:
    """A generation field as one task's request takes it: that task's default, the server's limit."""
    limit = f"; {server_limit(SERVER_LIMITS[name])}" if name in SERVER_LIMITS else ""
    note = default_note(name, task_defaults, f"model.toml [generation.{task}]")
    return FieldInfo.merge_field_infos(GEN[name], description=f"{MEANINGS[name]}{limit}; {note}")


class _Request(BaseModel):
    model_config = _config()
    model: str | None = Field(None, description="model name (GET /v1/models); default: the one loaded model "
                              "that serves the task (with several, required)")
    timeout_s: float | None = Field(None, ge=0.01, description=TIMEOUT)


class CaptionRequest(_Request, GenerationOptions):
    model_config = _config({"images": [TINY_PNG], "max_new_tokens": 20, "num_beams": 3})
    images: list[ImageRef] = Field(min_length=1, description=f"the images to caption: {IMAGES}")
    prompt: str | None = Field(None, description=f"text the caption continues (returned text excludes it); {TEXT}; "
                               "default: none")
    num_captions: int | None = Field(None, ge=1, description=f"captions per image (sampling or beams), 1 to "
                                     f"{MAX_RETURN}; default {defaults.CAPTION.num_return}")
    return_embeddings: bool = Field(False, description="also return each image's embedding from the same "
                                    "vision pass (models that serve embed)")
    max_new_tokens: int | None = _gen("max_new_tokens", "caption", defaults.CAPTION)
    num_beams: int | None = _gen("num_beams", "caption", defaults.CAPTION)


class CaptionOut(BaseModel):
    text: str = Field(description="the caption, without the prompt")
    tokens: list[int] = Field(description="generated ids after BOS and prompt, EOS excluded")
    logprob: float = Field(description="the model's log-probability of the generated ids (EOS included)")


class Usage(BaseModel):
    images: int
    generated_tokens: int


class CaptionResponse(BaseModel):
    model_config = _answer({"model": "blip-toy", "usage": {"images": 1, "generated_tokens": 4}, "captions": [[
        {"text": "a small red circle", "tokens": [1037, 2235, 2417, 4418], "logprob": -1.93}]]})
    model: str
    captions: list[list[CaptionOut]]
    image_embeddings: list[list[float]] | None = Field(None, description="with return_embeddings: unit length")
    usage: Usage


class EmbeddingsRequest(_Request):
    model_config = _config({"images": [TINY_PNG], "texts": ["a small red circle"]})
    images: list[ImageRef] | None = Field(None, description=f"images to embed: {IMAGES}; default: none")
    texts: list[str] | None = Field(None, description=f"texts to embed; {TEXTS}; default: none (give images, "
                                    "texts or both)")


class EmbeddingsResponse(BaseModel):
    model_config = _answer({"model": "blip-toy", "dim": 4, "image_embeddings": [[0.5, -0.5, 0.5, 0.5]],
                            "text_embeddings": [[0.6, -0.4, 0.6, 0.35]]})
    model: str
    image_embeddings: list[list[float]] | None = None
    text_embeddings: list[list[float]] | None = None
    dim: int


Head = Literal["itc", "itm"]


class ScoreRequest(_Request):
    model_config = _config({"images": [TINY_PNG], "texts": ["a small red circle", "a large blue square"],
                            "heads": ["itc", "itm"]})
    images: list[ImageRef] = Field(min_length=1, description=f"images to score against every text: {IMAGES}")
    texts: list[str] = Field(min_length=1, description=f"texts to score against every image; {TEXTS}")
    heads: list[Head] = Field(default_factory=lambda: ["itc"], min_length=1, description="itc: embedding cosine; "
                              "itm: the match head's probability (models with one: GET /v1/models score_heads); "
                              "default: itc")


class ScoreResponse(BaseModel):
    model_config = _answer({"model": "blip-toy", "itc": [[0.41, 0.07]], "itm": [[0.93, 0.02]]})
    model: str
    itc: list[list[float]] | None = Field(None, description="cosine similarity, images x texts")
    itm: list[list[float]] | None = Field(None, description="match probability, images x texts")


class RankRequest(_Request):
    model_config = _config({"query_image": TINY_PNG, "candidate_texts": ["a small red circle", "a large blue square"],
                            "top_k": 1})
    query_image: ImageRef | None = Field(None, description="the query image (or give query_text): base64, a data: "
                                         "URI, an http(s) URL where allowed, or a multipart file; default: none")
    query_text: str | None = Field(None, description=f"the query text (or give query_image); {TEXT}; default: none")
    candidate_texts: list[str] | None = Field(None, description=f"what an image query ranks; {TEXTS}; "
                                              "default: none")
    candidate_images: list[ImageRef] | None = Field(None, description=f"what a text query ranks: {IMAGES}; "
                                                    "default: none")
    k_itc: int = Field(16, ge=1, description="ITC shortlist size")
    top_k: int = Field(10, ge=1, description="results returned")
    rerank: bool | None = Field(None, description="re-rank the shortlist with ITM (default: when the re-ranking "
                                "model has a match head)")
    reranker: str | None = Field(None, description="the model whose ITM re-ranks the shortlist (default: model)")


class RankedOut(BaseModel):
    index: int
    itc: float
    itm: float | None = None


class RankResponse(BaseModel):
    model_config = _answer({"model": "blip-toy", "results": [{"index": 0, "itc": 0.41, "itm": 0.93}]})
    model: str
    results: list[RankedOut]


class VqaRequest(_Request):
    model_config = _config({"images": [TINY_PNG], "questions": ["what color is the circle?"]})
    images: list[ImageRef] = Field(min_length=1, description=f"the images asked about: {IMAGES}")
    questions: list[str] = Field(min_length=1, description=f"one per image; {TEXTS}")
    max_new_tokens: int | None = _gen("max_new_tokens", "vqa", defaults.VQA)
    min_new_tokens: int | None = _gen("min_new_tokens", "vqa", defaults.VQA)
    num_beams: int | None = _gen("num_beams", "vqa", defaults.VQA)
    candidates: list[str] | None = Field(None, description=f"rank these answers instead of generating; {TEXTS}; "
                                         "default: none")
    rank_answers: bool = Field(False, description="rank the model's own answer list (model.toml [vqa] answers)")
    mode: VqaMode | None = Field(None, description="generate, rank (candidates) or classify (the model's answer "
                                 "list); default: rank with candidates, else the model's first of generate, "
                                 "classify")
    top_k: int | None = Field(None, ge=1, description="ranked answers returned per question, best first "
                              "(rank and classify; default: all)")


class RankedAnswerOut(BaseModel):
    text: str
    prob: float


class AnswerOut(BaseModel):
    text: str
    tokens: list[int]
    logprob: float
    ranked: list[RankedAnswerOut] | None = None


class VqaResponse(BaseModel):
    model_config = _answer({"model": "blip-toy", "answers": [{"text": "red", "tokens": [2417], "logprob": -0.12}]})
    model: str
    answers: list[AnswerOut]


CAPFILT_DEFAULTS = defaults.CAPTION.replace(**defaults.CAPFILT_SAMPLING)  # the captioner samples


class CapfiltRequest(_Request):
    model_config = _config({"images": [TINY_PNG], "texts": [["a photo from my holiday", "a small red circle"]],
                            "num_synthetic": 2})
    images: list[ImageRef] = Field(min_length=1, description=f"the images to caption and filter: {IMAGES}")
    texts: list[list[str]] | None = Field(None, description=f"web captions to filter, one list per image (JSON "
                                          f"bodies only); {TEXTS}; default: none (synthetic captions only)")
    num_synthetic: int = Field(1, ge=0, le=MAX_RETURN, description="captions the captioner samples per image")
    threshold: float = Field(0.5, ge=0, le=1, description="ITM probability a caption needs to be kept")
    max_new_tokens: int | None = _gen("max_new_tokens", "caption", CAPFILT_DEFAULTS)
    min_new_tokens: int | None = _gen("min_new_tokens", "caption", CAPFILT_DEFAULTS)
    top_p: float | None = FieldInfo.merge_field_infos(GEN["top_p"], description=f"{MEANINGS['top_p']}; default "
                                                      f"{CAPFILT_DEFAULTS.top_p:g} (BLIP's nucleus sampling)")
    seed: int | None = _gen("seed", "caption", CAPFILT_DEFAULTS)
    captioner: str | None = Field(None, description="the model that samples synthetic captions (default: model)")
    filter: str | None = Field(None, description="the model whose ITM judges the captions (default: model)")


class FilteredCaptionOut(BaseModel):
    text: str
    source: Literal["web", "synthetic"]
    itm: float
    kept: bool


class CapfiltResponse(BaseModel):
    model_config = _answer({"model": "blip-toy", "results": [[
        {"text": "a photo from my holiday", "source": "web", "itm": 0.04, "kept": False},
        {"text": "a small red circle", "source": "web", "itm": 0.95, "kept": True},
        {"text": "a red circle on white", "source": "synthetic", "itm": 0.88, "kept": True}]]})
    model: str
    results: list[list[FilteredCaptionOut]]


class CapabilitiesOut(BaseModel):
    score_heads: list[str] = Field(description="itc (embedding cosine) and/or itm (match head)")
    vqa_modes: list[str] = Field(description="generate, rank, classify")
    embedding_dim: int | None = None
    max_text_tokens: int = Field(description="tokens a text may have, special tokens included")
    image_size: int
    answers: list[str] = Field(description="the answer list VQA ranks (rank_answers) or classifies over")
    answer_count: int = Field(0, description="how many answers that list holds")


class ModelInfo(BaseModel):
    name: str
    family: str | None = None
    state: Literal["loading", "ready", "failed", "skipped"]
    default: bool = Field(False, description="its model.toml says `default = true`: a request that names no model "
                          "gets it where several models serve the task")
    error: str | None = Field(None, description="why it failed, or why no family claims the folder")
    warnings: list[str] = []
    tasks: list[str] = Field(description="the routes it serves: caption, embed, score, rank, vqa, capfilt")
    graphs: list[str]
    capabilities: CapabilitiesOut | None = None
    device: str | None = None
    dtype: str | None = None
    runtimes: dict[str, str] | None = Field(None, description="per graph: torch or onnx, with -int8 when its "
                                            "linear layers run in int8")
    details: dict | None = Field(None, description="family-specific facts (attention backend, ...) and "
                                 "image_cache: its budget_bytes, bytes and entries")
    load_seconds: float | None = None


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="when this server started (Unix seconds)")
    owned_by: str = "vlserve"


class ModelsResponse(BaseModel):
    model_config = _answer({"object": "list", "models": [{
        "name": "blip-toy", "family": "blip", "state": "ready", "default": True, "warnings": [],
        "tasks": ["caption", "embed", "score", "rank", "vqa", "capfilt"],
        "graphs": ["vision", "text", "itm", "decoder"], "device": "cpu", "dtype": "float32",
        "capabilities": {"score_heads": ["itc", "itm"], "vqa_modes": ["generate", "rank"], "embedding_dim": 256,
                         "max_text_tokens": 35, "image_size": 64, "answers": [], "answer_count": 0},
        "load_seconds": 0.4}], "data": [{"id": "blip-toy", "object": "model", "created": 1767225600,
                                         "owned_by": "vlserve"}]})
    models: list[ModelInfo]
    object: Literal["list"] = Field("list", description="OpenAI's list shape, beside vlserve's `models`")
    data: list[OpenAIModel] = Field(default_factory=list, description="OpenAI's model objects "
                                    "(`client.models.list()`); skipped folders are not models")


class ErrorBody(BaseModel):
    type: str
    message: str
    param: str | None = None


class ErrorResponse(BaseModel):
    model_config = _answer({"error": {"type": "payload_too_large", "message": "70 images; the limit is 64",
                                      "param": "images"}})
    error: ErrorBody


METRICS_EXAMPLE = """\
# HELP vlserve_requests_total answered requests by outcome
# TYPE vlserve_requests_total counter
vlserve_requests_total{model="blip-toy",outcome="succeeded",status="200",task="caption"} 12.0
# HELP vlserve_queue_depth examples waiting per graph
# TYPE vlserve_queue_depth gauge
vlserve_queue_depth{graph="vision",model="blip-toy"} 0.0
"""

# the error answers every task route documents in OpenAPI
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 408, 413, 415, 422, 500, 503, 504)}
