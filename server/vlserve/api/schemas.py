"""Wire schemas of the v1 HTTP API (pydantic). Images travel as base64 strings or `data:`
URIs (or http(s) URLs when the server allows fetching); multipart uploads carry them as
files instead. Defaults not given here come from the model's model.toml."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..engine.family import VQA_MODES
from ..engine.generation.params import MAX_RETURN, GenerationOptions

ImageRef = str  # base64, data: URI, or (when enabled) an http(s) URL

TINY_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


def _config(*examples) -> ConfigDict:
    """Unknown fields and NaN/infinity are refused; the route validates strictly (api/inputs.py)."""
    return ConfigDict(extra="forbid", allow_inf_nan=False,
                      json_schema_extra={"examples": list(examples)} if examples else None)


GEN = GenerationOptions.model_fields  # the generation fields' one declaration
VqaMode = Literal[VQA_MODES]  # type: ignore[valid-type]


class _Request(BaseModel):
    model_config = _config()
    model: str | None = Field(None, description="model name; optional when one loaded model serves the task")
    timeout_s: float | None = Field(None, ge=0.01, description="deadline in seconds (may only shorten the server's)")


class CaptionRequest(_Request, GenerationOptions):
    model_config = _config({"images": [TINY_PNG], "max_new_tokens": 20, "num_beams": 3})
    images: list[ImageRef] = Field(min_length=1)
    prompt: str | None = Field(None, description="text the caption continues (returned text excludes it)")
    num_captions: int | None = Field(None, ge=1, description="captions per image (sampling or beams)")
    return_embeddings: bool = Field(False, description="also return each image's embedding from the same "
                                    "vision pass (models that serve embed)")


class CaptionOut(BaseModel):
    text: str = Field(description="the caption, without the prompt")
    tokens: list[int] = Field(description="generated ids after BOS and prompt, EOS excluded")
    logprob: float = Field(description="the model's log-probability of the generated ids (EOS included)")


class Usage(BaseModel):
    images: int
    generated_tokens: int


class CaptionResponse(BaseModel):
    model: str
    captions: list[list[CaptionOut]]
    image_embeddings: list[list[float]] | None = Field(None, description="with return_embeddings: unit length")
    usage: Usage


class EmbeddingsRequest(_Request):
    model_config = _config({"images": [TINY_PNG], "texts": ["a small red circle"]})
    images: list[ImageRef] | None = None
    texts: list[str] | None = None


class EmbeddingsResponse(BaseModel):
    model: str
    image_embeddings: list[list[float]] | None = None
    text_embeddings: list[list[float]] | None = None
    dim: int


Head = Literal["itc", "itm"]


class ScoreRequest(_Request):
    model_config = _config({"images": [TINY_PNG], "texts": ["a small red circle", "a large blue square"],
                            "heads": ["itc", "itm"]})
    images: list[ImageRef] = Field(min_length=1)
    texts: list[str] = Field(min_length=1)
    heads: list[Head] = Field(default_factory=lambda: ["itc"], min_length=1)


class ScoreResponse(BaseModel):
    model: str
    itc: list[list[float]] | None = Field(None, description="cosine similarity, images x texts")
    itm: list[list[float]] | None = Field(None, description="match probability, images x texts")


class RankRequest(_Request):
    model_config = _config({"query_image": TINY_PNG, "candidate_texts": ["a small red circle", "a large blue square"],
                            "top_k": 1})
    query_image: ImageRef | None = None
    query_text: str | None = None
    candidate_texts: list[str] | None = None
    candidate_images: list[ImageRef] | None = None
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
    model: str
    results: list[RankedOut]


class VqaRequest(_Request):
    model_config = _config({"images": [TINY_PNG], "questions": ["what color is the circle?"]})
    images: list[ImageRef] = Field(min_length=1)
    questions: list[str] = Field(min_length=1, description="one per image")
    max_new_tokens: int | None = GEN["max_new_tokens"]
    min_new_tokens: int | None = GEN["min_new_tokens"]
    num_beams: int | None = GEN["num_beams"]
    candidates: list[str] | None = Field(None, description="rank these answers instead of generating")
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
    model: str
    answers: list[AnswerOut]


class CapfiltRequest(_Request):
    model_config = _config({"images": [TINY_PNG], "texts": [["a photo from my holiday", "a small red circle"]],
                            "num_synthetic": 2})
    images: list[ImageRef] = Field(min_length=1)
    texts: list[list[str]] | None = Field(None, description="web captions to filter, one list per image")
    num_synthetic: int = Field(1, ge=0, le=MAX_RETURN, description="captions the captioner samples per image")
    threshold: float = Field(0.5, ge=0, le=1, description="ITM probability a caption needs to be kept")
    max_new_tokens: int | None = GEN["max_new_tokens"]
    min_new_tokens: int | None = GEN["min_new_tokens"]
    top_p: float | None = GEN["top_p"]
    seed: int | None = GEN["seed"]
    captioner: str | None = Field(None, description="the model that samples synthetic captions (default: model)")
    filter: str | None = Field(None, description="the model whose ITM judges the captions (default: model)")


class FilteredCaptionOut(BaseModel):
    text: str
    source: Literal["web", "synthetic"]
    itm: float
    kept: bool


class CapfiltResponse(BaseModel):
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
    error: str | None = Field(None, description="why it failed, or why no family claims the folder")
    warnings: list[str] = []
    tasks: list[str] = Field(description="the routes it serves: caption, embed, score, rank, vqa, capfilt")
    graphs: list[str]
    capabilities: CapabilitiesOut | None = None
    device: str | None = None
    dtype: str | None = None
    runtimes: dict[str, str] | None = Field(None, description="per graph: torch or onnx")
    details: dict | None = Field(None, description="family-specific facts (attention backend, ...)")
    load_seconds: float | None = None


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="when this server started (Unix seconds)")
    owned_by: str = "vlserve"


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    object: Literal["list"] = Field("list", description="OpenAI's list shape, beside vlserve's `models`")
    data: list[OpenAIModel] = Field(default_factory=list, description="OpenAI's model objects "
                                    "(`client.models.list()`); skipped folders are not models")


class ErrorBody(BaseModel):
    type: str
    message: str
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# the error answers every task route documents in OpenAPI
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 408, 413, 415, 422, 500, 503, 504)}
