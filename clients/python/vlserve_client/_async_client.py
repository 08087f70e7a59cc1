"""The asyncio client: the same methods as Client, awaited."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterable, Sequence

import httpx

from ._base import DEFAULT_TIMEOUT, LIVE, READY, ROUTES, BaseClient
from ._bulk import ItemResult, arun_many
from ._exceptions import APIConnectionError, APITimeoutError
from ._images import ImageInput, Remote, adownload, as_list, to_wire
from ._models import (CapfiltResponse, Caption, CaptionResponse, EmbeddingsResponse, GenerationOptions, Head, ModelInfo,
                      RankResponse, ScoreResponse, VqaMode, VqaResponse)
from ._retry import Retry

try:
    from typing import Unpack
except ImportError:  # Python 3.10
    from typing_extensions import Unpack


class AsyncClient(BaseClient):
    """Like Client, for asyncio: `async with AsyncClient(url) as c: await c.caption("cat.jpg")`.

    `transport=httpx.ASGITransport(app)` runs against an app in the same process.
    """

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, max_retries: int = 2, retry: Retry | None = None,
                 headers: dict[str, str] | None = None, send_urls: bool = False,
                 transport: httpx.AsyncBaseTransport | None = None, http_client: httpx.AsyncClient | None = None):
        super().__init__(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries, retry=retry,
                         headers=headers, send_urls=send_urls)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport, timeout=self.timeout)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # -- sending -------------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _request(self, method: str, path: str, body: dict | None = None, *,
                       retry: bool = True) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, self._url(path), json=body, headers=self._headers)
            except httpx.TransportError as exc:
                delay = self.retry.after_error(attempt, exc) if retry else None
                if delay is None:
                    raise self._connection_error(exc) from exc
            else:
                delay = self.retry.after_response(attempt, response) if retry else None
                if delay is None:
                    return response
            attempt += 1
            await self._sleep(delay)

    async def _call(self, name: str, request=None) -> Any:
        route = ROUTES[name]
        body = request.body() if request else None
        return self._parse(route, await self._request(route.method, route.path, body))

    async def _wire(self, images: Any) -> list[str]:
        refs = [to_wire(image, self.send_urls) for image in as_list(images)]
        return [await adownload(r.url, self._download_timeout) if isinstance(r, Remote) else r for r in refs]

    # -- tasks (documented on Client) --------------------------------------------------------------

    async def caption(self, images: ImageInput | Sequence[ImageInput], *, model: str | None = None,
                      prompt: str | None = None, num_captions: int | None = None, timeout_s: float | None = None,
                      return_embeddings: bool | None = None,
                      **generation: Unpack[GenerationOptions]) -> CaptionResponse:
        return await self._call("caption", self._caption_request(
            await self._wire(images), generation, model=model, prompt=prompt, num_captions=num_captions,
            timeout_s=timeout_s, return_embeddings=return_embeddings))

    async def embed(self, images: ImageInput | Sequence[ImageInput] | None = None,
                    texts: str | Sequence[str] | None = None, *, model: str | None = None,
                    timeout_s: float | None = None) -> EmbeddingsResponse:
        wired = await self._wire(images) if images is not None else None
        return await self._call("embed", self._embed_request(wired, texts, model=model, timeout_s=timeout_s))

    async def score(self, images: ImageInput | Sequence[ImageInput], texts: str | Sequence[str], *,
                    heads: Head | Sequence[Head] | None = None, model: str | None = None,
                    timeout_s: float | None = None) -> ScoreResponse:
        return await self._call("score", self._score_request(await self._wire(images), texts, heads, model=model,
                                                             timeout_s=timeout_s))

    async def rank(self, *, query_image: ImageInput | None = None, query_text: str | None = None,
                   candidate_texts: Sequence[str] | None = None,
                   candidate_images: Sequence[ImageInput] | None = None, top_k: int | None = None,
                   k_itc: int | None = None, rerank: bool | None = None, reranker: str | None = None,
                   model: str | None = None, timeout_s: float | None = None) -> RankResponse:
        return await self._call("rank", self._rank_request(
            query_text, candidate_texts, model=model, timeout_s=timeout_s, top_k=top_k, k_itc=k_itc, rerank=rerank,
            reranker=reranker,
            query_image=(await self._wire([query_image]))[0] if query_image is not None else None,
            candidate_images=await self._wire(list(candidate_images)) if candidate_images is not None else None))

    async def vqa(self, images: ImageInput | Sequence[ImageInput], questions: str | Sequence[str], *,
                  candidates: Sequence[str] | None = None, rank_answers: bool | None = None,
                  mode: VqaMode | None = None, top_k: int | None = None, max_new_tokens: int | None = None,
                  min_new_tokens: int | None = None, num_beams: int | None = None, model: str | None = None,
                  timeout_s: float | None = None) -> VqaResponse:
        return await self._call("vqa", self._vqa_request(
            await self._wire(images), questions, candidates, rank_answers=rank_answers, mode=mode, top_k=top_k,
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, num_beams=num_beams, model=model,
            timeout_s=timeout_s))

    async def capfilt(self, images: ImageInput | Sequence[ImageInput],
                      texts: Sequence[Sequence[str]] | None = None, *, num_synthetic: int | None = None,
                      threshold: float | None = None, max_new_tokens: int | None = None,
                      min_new_tokens: int | None = None, top_p: float | None = None, seed: int | None = None,
                      captioner: str | None = None, filter: str | None = None, model: str | None = None,
                      timeout_s: float | None = None) -> CapfiltResponse:
        return await self._call("capfilt", self._capfilt_request(
            await self._wire(images), texts, num_synthetic=num_synthetic, threshold=threshold,
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, top_p=top_p, seed=seed,
            captioner=captioner, filter=filter, model=model, timeout_s=timeout_s))

    # -- bulk ----------------------------------------------------------------------------------

    async def caption_many(self, images: Iterable[ImageInput], *, concurrency: int = 4, progress: bool = False,
                           **options: Any) -> list[ItemResult[list[Caption]]]:
        async def one(image):
            return (await self.caption([image], **options)).captions[0]
        return await arun_many(one, images, concurrency=concurrency, progress=progress, desc="caption")

    async def embed_many(self, images: Iterable[ImageInput], *, concurrency: int = 4, progress: bool = False,
                         **options: Any) -> list[ItemResult[list[float]]]:
        async def one(image):
            return (await self.embed([image], **options)).image_embeddings[0]
        return await arun_many(one, images, concurrency=concurrency, progress=progress, desc="embed")

    # -- admin ---------------------------------------------------------------------------------

    async def models(self) -> list[ModelInfo]:
        return (await self._call("models")).models

    async def health(self) -> bool:
        return (await self._request("GET", LIVE, retry=False)).status_code == 200

    async def ready(self) -> bool:
        return (await self._request("GET", READY, retry=False)).status_code == 200

    async def wait_ready(self, timeout: float = 60.0, interval: float = 0.25) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await self.ready():
                    return
            except APIConnectionError:
                pass
            if time.monotonic() >= deadline:
                raise APITimeoutError(f"{self.base_url} not ready after {timeout:g} s")
            await self._sleep(interval)
