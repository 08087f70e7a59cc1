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
VqaMode = Literal["generate", "rank", "classify"]


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
    image_embeddings: list[list[float]] | None = None  # with return_embeddings: from the same vision pass
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


class Capabilities(BaseModel):
    score_heads: list[str]  # itc (embedding cosine) and/or itm (match head)
    vqa_modes: list[str]  # of generate, rank, classify
    embedding_dim: int | None = None
    max_text_tokens: int  # tokens a text may have, special tokens included
    image_size: int
    answers: list[str]  # the answer list VQA ranks (rank_answers) or classifies over
    answer_count: int = 0  # len(answers)


class ModelInfo(BaseModel):
    name: str
    family: str | None = None  # None when no family claims the folder (state "skipped")
    state: Literal["loading", "ready", "failed", "skipped"]
    default: bool = False  # model.toml's default = true: requests naming no model get it
    error: str | None = None  # why it failed, or why no family claims the folder
    warnings: list[str] = []
    tasks: list[str]  # the routes it serves: caption, embed, score, rank, vqa, capfilt
    graphs: list[str]
    capabilities: Capabilities | None = None
    device: str | None = None
    dtype: str | None = None
    runtimes: dict[str, str] | None = None  # per graph: torch or onnx
    details: dict | None = None  # family-specific facts (attention backend, ...)
    load_seconds: float | None = None


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "vlserve"


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    object: Literal["list"] = "list"  # OpenAI's list shape beside `models`
    data: list[OpenAIModel] = []  # absent from servers before issue 15


# -- requests ----------------------------------------------------------------------------------

class GenerationOptions(TypedDict, total=False):
    """Decoding settings a caption request may carry (the model's model.toml gives defaults).
    The server checks the ranges noted here, naming the field in its error; the SDK does not."""

    max_new_tokens: int  # >= 1, at most the server's limit
    min_new_tokens: int  # >= 0
    num_beams: int  # >= 1, at most the server's limit
    length_penalty: float  # -10 .. 10
    do_sample: bool
    top_p: float  # (0, 1]
    top_k: int  # 0 .. 1e6 (0 disables it)
    temperature: float  # 1e-4 .. 1e4
    seed: int  # 0 .. 2**63 - 1
    repetition_penalty: float  # 1e-4 .. 1e4


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    timeout_s: float | None = None  # the server's deadline for this request (>= 0.01; may only shorten it)

    def body(self) -> dict:
        return self.model_dump(exclude_none=True)


class CaptionRequest(_Request):
    images: list[str]
    prompt: str | None = None
    num_captions: int | None = None
    return_embeddings: bool | None = None
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
    rerank: bool | None = None  # default: when the re-ranking model has a match head
    reranker: str | None = None  # the model whose ITM re-ranks the ITC shortlist (default: model)


class VqaRequest(_Request):
    images: list[str]
    questions: list[str]
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    num_beams: int | None = None
    candidates: list[str] | None = None
    rank_answers: bool | None = None
    mode: VqaMode | None = None
    top_k: int | None = None


class CapfiltRequest(_Request):
    images: list[str]
    texts: list[list[str]] | None = None
    num_synthetic: int | None = None
    threshold: float | None = None
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    captioner: str | None = None  # the model that samples synthetic captions (default: model)
    filter: str | None = None  # the model whose ITM judges the captions (default: model)
