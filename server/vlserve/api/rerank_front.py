"""Cohere/Jina-style rerank (`POST /v1/rerank`, `/rerank`), what RAG pipelines call to re-order
retrieved items, onto the rank task: a text query over image documents or an image query over
text documents. Relevance is the model's best scorer over every document: ITM probability
where the re-ranking model has a match head (BLIP), ITC cosine otherwise (CoCa, BEiT-3).

Query and documents: a string (a text), `{"text": ...}`, `{"image": url-or-data-URI}`, an
OpenAI content part, or (vLLM's form for documents) `{"content": [part, ...]}`, each part one
document.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidInputError
from .openai_front import content_item
from .schemas import ERRORS, TEXT, TEXTS, TIMEOUT, documented, server_limit

router = APIRouter()


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=documented(
        {"model": "blip-toy", "query": "a small red circle",
         "documents": [{"image": "https://example.com/a.png"}, {"image": "data:image/png;base64,..."}],
         "top_n": 1}))
    model: str | None = Field(None, description="model name (GET /v1/models); default: the one loaded model that "
                              "serves rank")
    query: Any = Field(description='a text, or an image item ({"image": url or data: URI}, an OpenAI image_url '
                       f"part); {TEXT}")
    documents: list[Any] | dict = Field(description="texts for an image query, images for a text query: a list, "
                                        f'or {{"content": [part, ...]}}; {TEXTS}; images: '
                                        f"{server_limit('max_images')}")
    top_n: int | None = Field(None, ge=1, description="results returned, best first (default: all)")
    return_documents: bool = Field(False, description="echo each result's document")
    reranker: str | None = Field(None, description="the model whose ITM scores the documents (default: model)")
    timeout_s: float | None = Field(None, ge=0.01, description=f"vlserve's {TIMEOUT}")


class RerankDocument(BaseModel):
    text: str | None = None
    image: str | None = None


class RerankResult(BaseModel):
    index: int
    relevance_score: float = Field(description="ITM probability, or ITC cosine where no model has ITM")
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    total_tokens: int = Field(description="text tokens, special tokens included")


class RerankResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "rerank-5f0c", "model": "blip-toy", "results": [{"index": 1, "relevance_score": 0.93}],
         "usage": {"total_tokens": 7}}]})
    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage


def _documents(documents) -> list[tuple[str, str]]:
    if isinstance(documents, dict):
        if set(documents) != {"content"} or not isinstance(documents["content"], list):
            raise InvalidInputError('documents is a list, or {"content": [part, ...]}', param="documents")
        return [content_item(x, f"documents.content[{i}]") for i, x in enumerate(documents["content"])]
    return [content_item(x, f"documents[{i}]") for i, x in enumerate(documents)]


async def _rerank(request: Request):
    from ..tasks.retrieval import rank as rank_task
    from .decoding import decode_images, read_images
    from .routes import _read

    gw, body, _ = await _read(request, RerankRequest)
    kind, query = content_item(body.query, "query")
    docs = _documents(body.documents)
    if not docs:
        raise InvalidInputError("documents is empty: nothing to rank", param="documents")
    want = "text" if kind == "image" else "image"
    wrong = next((i for i, (k, _) in enumerate(docs) if k != want), None)
    if wrong is not None:
        raise InvalidInputError(f"a{'n image' if kind == 'image' else ' text'} query ranks {want}s; document {wrong} "
                                f"is a{'n image' if want == 'text' else ' text'}", param=f"documents[{wrong}]")
    texts = [v for _, v in docs] if kind == "image" else [query]
    images = await read_images(gw, [query] if kind == "image" else [v for _, v in docs], {},
                               "query" if kind == "image" else "documents")

    async def work(served, models):
        model, reranker = served["model"], served["reranker"]
        pixels = await decode_images(gw, model, images)
        rerank_pixels = await decode_images(gw, reranker, images) if reranker is not model else None
        tokens = await gw.in_thread(model.engine.check_texts, texts, "documents" if kind == "image" else "query")
        n = len(docs)
        query_args = dict(query_pixels=pixels, candidate_texts=texts) if kind == "image" else \
            dict(query_text=query, candidate_pixels=pixels)
        ranked = await rank_task(models["model"], **query_args, k_itc=n, top_k=body.top_n or n,
                                 reranker=models["reranker"], rerank_pixels=rerank_pixels)
        results = [RerankResult(index=r.index, relevance_score=r.itm if r.itm is not None else r.itc,
                                document=RerankDocument(**{docs[r.index][0]: docs[r.index][1]})
                                if body.return_documents else None) for r in ranked]
        return RerankResponse(id=f"rerank-{uuid.uuid4().hex}", model=model.name, results=results,
                              usage=RerankUsage(total_tokens=sum(tokens)))

    return await gw.run(request, "rank", body.timeout_s, work, model=(body.model, "rank"),
                        reranker=(body.reranker, "score"))


for path in ("/v1/rerank", "/rerank"):
    router.add_api_route(path, _rerank, methods=["POST"], response_model=RerankResponse, responses=ERRORS,
                         response_model_exclude_none=True, summary="Cohere/Jina-style rerank of images or texts",
                         openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"$ref": "#/components/schemas/RerankRequest"}}}}},
                         operation_id=f"rerank{path.replace('/', '_')}")
