"""The blocking client."""

from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

import httpx

from ._base import DEFAULT_TIMEOUT, LIVE, READY, ROUTES, BaseClient
from ._bulk import ItemResult, run_many
from ._exceptions import APIConnectionError, APITimeoutError
from ._images import ImageInput, Remote, as_list, download, to_wire
from ._models import (CapfiltResponse, Caption, CaptionResponse, EmbeddingsResponse, GenerationOptions, Head, ModelInfo,
                      RankResponse, ScoreResponse, VqaMode, VqaResponse)
from ._retry import Retry

try:
    from typing import Unpack
except ImportError:  # Python 3.10
    from typing_extensions import Unpack


class Client(BaseClient):
    """A vlserve client. Images may be paths, bytes, binary files, PIL.Images or URLs; one
    image or a list of them. Thread-safe; use it as a context manager or call `close()`.

    `timeout` is the HTTP timeout; a request's `timeout_s` is the server's deadline for it.
    `transport`, or a ready `http_client` (whose timeout and closing stay the caller's), plug
    in anything httpx can talk to, such as an in-process app.
    """

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, max_retries: int = 2, retry: Retry | None = None,
                 headers: dict[str, str] | None = None, send_urls: bool = False,
                 transport: httpx.BaseTransport | None = None, http_client: httpx.Client | None = None):
        super().__init__(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries, retry=retry,
                         headers=headers, send_urls=send_urls)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(transport=transport, timeout=self.timeout)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- sending -------------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def _request(self, method: str, path: str, body: dict | None = None, *, retry: bool = True) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(method, self._url(path), json=body, headers=self._headers)
            except httpx.TransportError as exc:
                delay = self.retry.after_error(attempt, exc) if retry else None
                if delay is None:
                    raise self._connection_error(exc) from exc
            else:
                delay = self.retry.after_response(attempt, response) if retry else None
                if delay is None:
                    return response
            attempt += 1
            self._sleep(delay)

    def _call(self, name: str, request=None) -> Any:
        route = ROUTES[name]
        return self._parse(route, self._request(route.method, route.path, request.body() if request else None))

    def _wire(self, images: Any) -> list[str]:
        refs = [to_wire(image, self.send_urls) for image in as_list(images)]
        return [download(r.url, self._download_timeout) if isinstance(r, Remote) else r for r in refs]

    # -- tasks ---------------------------------------------------------------------------------

    def caption(self, images: ImageInput | Sequence[ImageInput], *, model: str | None = None,
                prompt: str | None = None, num_captions: int | None = None, timeout_s: float | None = None,
                return_embeddings: bool | None = None, **generation: Unpack[GenerationOptions]) -> CaptionResponse:
        """Caption images; `captions[i]` holds image i's `num_captions` captions.
        `return_embeddings`: also each image's embedding, from the same vision pass."""
        return self._call("caption", self._caption_request(
            self._wire(images), generation, model=model, prompt=prompt, num_captions=num_captions,
            timeout_s=timeout_s, return_embeddings=return_embeddings))

    def embed(self, images: ImageInput | Sequence[ImageInput] | None = None, texts: str | Sequence[str] | None = None,
              *, model: str | None = None, timeout_s: float | None = None) -> EmbeddingsResponse:
        """Normalised ITC embeddings of images and/or texts (comparable by dot product)."""
        wired = self._wire(images) if images is not None else None
        return self._call("embed", self._embed_request(wired, texts, model=model, timeout_s=timeout_s))

    def score(self, images: ImageInput | Sequence[ImageInput], texts: str | Sequence[str], *,
              heads: Head | Sequence[Head] | None = None, model: str | None = None,
              timeout_s: float | None = None) -> ScoreResponse:
        """Images x texts matrices: `itc` cosine similarity and/or `itm` match probability."""
        return self._call("score", self._score_request(self._wire(images), texts, heads, model=model,
                                                       timeout_s=timeout_s))

    def rank(self, *, query_image: ImageInput | None = None, query_text: str | None = None,
             candidate_texts: Sequence[str] | None = None,
             candidate_images: Sequence[ImageInput] | None = None, top_k: int | None = None,
             k_itc: int | None = None, rerank: bool | None = None, reranker: str | None = None,
             model: str | None = None, timeout_s: float | None = None) -> RankResponse:
        """Rank candidate texts for an image query, or candidate images for a text query.

        `model` shortlists the `k_itc` best by ITC; `reranker` (default: `model`) names the
        model whose ITM re-ranks that shortlist. `rerank` left out re-ranks when the re-ranking
        model has a match head; `False` keeps the ITC order (`itm` is then None)."""
        return self._call("rank", self._rank_request(
            query_text, candidate_texts, model=model, timeout_s=timeout_s, top_k=top_k, k_itc=k_itc, rerank=rerank,
            reranker=reranker,
            query_image=self._wire([query_image])[0] if query_image is not None else None,
            candidate_images=self._wire(list(candidate_images)) if candidate_images is not None else None))

    def vqa(self, images: ImageInput | Sequence[ImageInput], questions: str | Sequence[str], *,
            candidates: Sequence[str] | None = None, rank_answers: bool | None = None,
            mode: VqaMode | None = None, top_k: int | None = None, max_new_tokens: int | None = None,
            min_new_tokens: int | None = None, num_beams: int | None = None, model: str | None = None,
            timeout_s: float | None = None) -> VqaResponse:
        """Answer one question per image: generated, or ranked among `candidates`.

        `mode` picks how: "generate" (decode an answer), "rank" (score `candidates`) or
        "classify" (over the model's own answer list, `ModelInfo.capabilities.answers`). Left
        out, the server ranks when `candidates` are given, else uses the first of generate,
        classify the model supports (`capabilities.vqa_modes`). `top_k` keeps the best k of
        each answer's `ranked` list (rank and classify; default: all)."""
        return self._call("vqa", self._vqa_request(
            self._wire(images), questions, candidates, rank_answers=rank_answers, mode=mode, top_k=top_k,
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, num_beams=num_beams, model=model,
            timeout_s=timeout_s))

    def capfilt(self, images: ImageInput | Sequence[ImageInput], texts: Sequence[Sequence[str]] | None = None, *,
                num_synthetic: int | None = None, threshold: float | None = None, max_new_tokens: int | None = None,
                min_new_tokens: int | None = None, top_p: float | None = None, seed: int | None = None,
                captioner: str | None = None, filter: str | None = None, model: str | None = None,
                timeout_s: float | None = None) -> CapfiltResponse:
        """BLIP's CapFilt: sample `num_synthetic` captions per image and judge them and the
        image's web captions (`texts[i]`) with ITM; `kept` marks those at or over `threshold`.

        `captioner` names the model that samples the synthetic captions and `filter` the one
        whose ITM judges them; each defaults to `model`."""
        return self._call("capfilt", self._capfilt_request(
            self._wire(images), texts, num_synthetic=num_synthetic, threshold=threshold,
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, top_p=top_p, seed=seed,
            captioner=captioner, filter=filter, model=model, timeout_s=timeout_s))

    # -- bulk ----------------------------------------------------------------------------------

    def caption_many(self, images: Iterable[ImageInput], *, concurrency: int = 4, progress: bool = False,
                     **options: Any) -> list[ItemResult[list[Caption]]]:
        """`caption()` each image on its own; results in input order, failures kept per item."""
        return run_many(lambda image: self.caption([image], **options).captions[0], images,
                        concurrency=concurrency, progress=progress, desc="caption")

    def embed_many(self, images: Iterable[ImageInput], *, concurrency: int = 4, progress: bool = False,
                   **options: Any) -> list[ItemResult[list[float]]]:
        """Image embeddings one image at a time; results in input order, failures kept per item."""
        return run_many(lambda image: self.embed([image], **options).image_embeddings[0], images,
                        concurrency=concurrency, progress=progress, desc="embed")

    # -- admin ---------------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return self._call("models").models

    def health(self) -> bool:
        """Whether the server is live (answers at all). Raises APIConnectionError when unreachable."""
        return self._request("GET", LIVE, retry=False).status_code == 200

    def ready(self) -> bool:
        """Whether the server takes work now (a model loaded, not draining)."""
        return self._request("GET", READY, retry=False).status_code == 200

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.25) -> None:
        """Block until `ready()`, or raise APITimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.ready():
                    return
            except APIConnectionError:
                pass  # not listening yet
            if time.monotonic() >= deadline:
                raise APITimeoutError(f"{self.base_url} not ready after {timeout:g} s")
            self._sleep(interval)
