"""The wire schemas of vlserve's v1 API as the client sees them.

Responses mirror the server's models field for field (tests/client/test_openapi.py holds
them to the server's OpenAPI document); unknown fields a newer server adds are ignored.
Request fields the caller leaves out are not sent, so the server's (and the model's)
defaults apply; the server alone judges values.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from pydantic import BaseModel, ConfigDict

Head = Literal["itc", "itm"]


# -- responses -------------------------------------------------------------------------------

class Caption(BaseModel):
    text: str
    tokens: list[int]
    logprob: float


class Usage(BaseModel):
    images: int
    generated_tokens: int


class CaptionResponse(BaseModel):
    model: str
    captions: list[list[Caption]]  # per image, `num_captions` each
    usage: Usage


class EmbeddingsResponse(BaseModel):
    model: str
    image_embeddings: list[list[float]] | None = None
    text_embeddings: list[list[float]] | None = None
    dim: int


class ScoreResponse(BaseModel):
    model: str
    itc: list[list[float]] | None = None  # cosine similarity, images x texts
    itm: list[list[float]] | None = None  # match probability, images x texts


class RankedItem(BaseModel):
    index: int  # into the candidates as given
    itc: float
    itm: float | None = None


class RankResponse(BaseModel):
    model: str
    results: list[RankedItem]


class RankedAnswer(BaseModel):
    text: str
    prob: float


class Answer(BaseModel):
    text: str
    tokens: list[int]
    logprob: float
    ranked: list[RankedAnswer] | None = None


class VqaResponse(BaseModel):
    model: str
    answers: list[Answer]  # one per (image, question)


class FilteredCaption(BaseModel):
    text: str
    source: Literal["web", "synthetic"]
    itm: float  # match probability
    kept: bool  # itm >= the request's threshold


class CapfiltResponse(BaseModel):
    model: str
    results: list[list[FilteredCaption]]  # per image: its web captions, then the synthetic ones


class ModelInfo(BaseModel):
    name: str
    family: str
    state: Literal["loading", "ready", "failed"]
    error: str | None = None
    tasks: list[str]
    graphs: list[str]
    device: str | None = None
    dtype: str | None = None
    attention: str | None = None
    cross_attention: str | None = None
    runtimes: dict[str, str] | None = None
    load_seconds: float | None = None


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


# -- requests ----------------------------------------------------------------------------------

class GenerationOptions(TypedDict, total=False):
    """Decoding settings a caption request may carry (the model's model.toml gives defaults)."""

    max_new_tokens: int
    min_new_tokens: int
    num_beams: int
    length_penalty: float
    do_sample: bool
    top_p: float
    top_k: int
    temperature: float
    seed: int
    repetition_penalty: float


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    timeout_s: float | None = None  # the server's deadline for this request

    def body(self) -> dict:
        return self.model_dump(exclude_none=True)


class CaptionRequest(_Request):
    images: list[str]
    prompt: str | None = None
    num_captions: int | None = None
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    num_beams: int | None = None
    length_penalty: float | None = None
    do_sample: bool | None = None
    top_p: float | None = None
    top_k: int | None = None
    temperature: float | None = None
    seed: int | None = None
    repetition_penalty: float | None = None


class EmbeddingsRequest(_Request):
    images: list[str] | None = None
    texts: list[str] | None = None


class ScoreRequest(_Request):
    images: list[str]
    texts: list[str]
    heads: list[Head] | None = None


class RankRequest(_Request):
    query_image: str | None = None
    query_text: str | None = None
    candidate_texts: list[str] | None = None
    candidate_images: list[str] | None = None
    k_itc: int | None = None
    top_k: int | None = None
    rerank: bool | None = None


class VqaRequest(_Request):
    images: list[str]
    questions: list[str]
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    num_beams: int | None = None
    candidates: list[str] | None = None
    rank_answers: bool | None = None


class CapfiltRequest(_Request):
    images: list[str]
    texts: list[list[str]] | None = None
    num_synthetic: int | None = None
    threshold: float | None = None
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
