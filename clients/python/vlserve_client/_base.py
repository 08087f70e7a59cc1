"""What Client and AsyncClient share: configuration, the route table, request building and
response parsing. Only sending (and sleeping between retries) differs between the two."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import httpx
from pydantic import BaseModel

from ._exceptions import APIConnectionError, APITimeoutError, error_for
from ._models import (CapfiltRequest, CapfiltResponse, CaptionRequest, CaptionResponse, EmbeddingsRequest,
                      EmbeddingsResponse, GenerationOptions, ModelsResponse, RankRequest, RankResponse, ScoreRequest,
                      ScoreResponse, VqaRequest, VqaResponse)
from ._retry import Retry
from ._version import __version__

DEFAULT_URL = "http://localhost:8000"
# Longer than the server's default deadline (60 s), so the server's 504 arrives first.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
_GENERATION_KEYS = frozenset(GenerationOptions.__annotations__)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    request: type[BaseModel] | None
    response: type[BaseModel]


ROUTES = {
    "caption": Route("POST", "/v1/caption", CaptionRequest, CaptionResponse),
    "embed": Route("POST", "/v1/embeddings", EmbeddingsRequest, EmbeddingsResponse),
    "score": Route("POST", "/v1/retrieval/score", ScoreRequest, ScoreResponse),
    "rank": Route("POST", "/v1/retrieval/rank", RankRequest, RankResponse),
    "vqa": Route("POST", "/v1/vqa", VqaRequest, VqaResponse),
    "capfilt": Route("POST", "/v1/capfilt", CapfiltRequest, CapfiltResponse),
    "models": Route("GET", "/v1/models", None, ModelsResponse),
}
LIVE, READY = "/health/live", "/health/ready"


def _strings(value: str | Sequence[str] | None) -> list[str] | None:
    """One text or many: a lone string is a list of one."""
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


class BaseClient:
    def __init__(self, base_url: str | None, *, api_key: str | None, timeout: float | httpx.Timeout,
                 max_retries: int, retry: Retry | None, headers: dict[str, str] | None, send_urls: bool):
        # Read when a client is made (never at import), as httpx and openai do.
        self.base_url = (base_url or os.environ.get("VLSERVE_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("VLSERVE_API_KEY") or None
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.retry = retry or Retry(max_retries=max_retries)
        self.send_urls = send_urls
        self._headers = {"User-Agent": f"vlserve-client/{__version__}", **(headers or {})}
        if self.api_key:
            self._headers["Authorization"] = f"Bearer {self.api_key}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    @property
    def _download_timeout(self) -> float:
        return self.timeout.read or 30.0

    def _url(self, path: str) -> str:
        return self.base_url + path

    @staticmethod
    def _connection_error(exc: httpx.TransportError) -> APIConnectionError:
        cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        return cls(f"{type(exc).__name__}: {exc}", request=getattr(exc, "_request", None))

    @staticmethod
    def _parse(route: Route, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise error_for(response)
        return route.response.model_validate_json(response.content)

    # -- request bodies (images already on the wire: base64 strings or URLs) ---------------------

    @staticmethod
    def _caption_request(images: list[str], generation: dict, **fields) -> CaptionRequest:
        unknown = sorted(set(generation) - _GENERATION_KEYS)
        if unknown:
            raise TypeError(f"caption() got unexpected keyword argument(s): {', '.join(unknown)}")
        return CaptionRequest(images=images, **fields, **generation)

    @staticmethod
    def _embed_request(images: list[str] | None, texts, **fields) -> EmbeddingsRequest:
        if images is None and texts is None:
            raise ValueError("embed() needs images, texts or both")
        return EmbeddingsRequest(images=images, texts=_strings(texts), **fields)

    @staticmethod
    def _score_request(images: list[str], texts, heads, **fields) -> ScoreRequest:
        return ScoreRequest(images=images, texts=_strings(texts), heads=_strings(heads), **fields)

    @staticmethod
    def _vqa_request(images: list[str], questions, candidates, **fields) -> VqaRequest:
        return VqaRequest(images=images, questions=_strings(questions), candidates=_strings(candidates), **fields)

    @staticmethod
    def _rank_request(query_text, candidate_texts, **fields) -> RankRequest:
        return RankRequest(query_text=query_text, candidate_texts=_strings(candidate_texts), **fields)

    @staticmethod
    def _capfilt_request(images: list[str], texts, **fields) -> CapfiltRequest:
        if texts is not None:
            texts = [_strings(t) for t in texts]
        return CapfiltRequest(images=images, texts=texts, **fields)
