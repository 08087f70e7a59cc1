"""The v1 task routes. Each reads its body (JSON or multipart), then runs its task through
the gateway: images are decoded and preprocessed in the thread pool, graphs run on the
model's device worker."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..engine.generation.params import GenerationParams
from ..errors import InvalidInputError
from ..tasks import blip_tasks
from .decoding import decode_images, read_images
from .gateway import Gateway
from .inputs import read_request
from .schemas import (AnswerOut, CapfiltRequest, CapfiltResponse, CaptionOut, CaptionRequest, CaptionResponse,
                      EmbeddingsRequest, EmbeddingsResponse, ErrorResponse, FilteredCaptionOut, RankedAnswerOut,
                      RankedOut, RankRequest, RankResponse, ScoreRequest, ScoreResponse, Usage, VqaRequest,
                      VqaResponse)

router = APIRouter(prefix="/v1")
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 408, 413, 415, 422, 500, 503, 504)}


def _doc(schema) -> dict:
    """Document the body (JSON or multipart) in OpenAPI; the route parses it itself."""
    ref = {"$ref": f"#/components/schemas/{schema.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref},
                                                          "multipart/form-data": {"schema": ref}}}}


async def _read(request: Request, schema):
    """(gateway, validated body, uploaded files) of a task request."""
    gw: Gateway = request.app.state.gateway
    body, uploads = await read_request(request, schema, gw.settings, gw.in_thread)
    return gw, body, uploads


def _generation(gw: Gateway, base: GenerationParams, fields: dict) -> GenerationParams:
    return base.replace(**fields).validate(max_new_tokens=gw.settings.max_new_tokens,
                                           max_beams=gw.settings.max_beams)


GEN_FIELDS = ("max_new_tokens", "min_new_tokens", "num_beams", "length_penalty", "do_sample", "top_p", "top_k",
              "temperature", "seed", "repetition_penalty")


@router.post("/caption", response_model=CaptionResponse, responses=ERRORS, openapi_extra=_doc(CaptionRequest),
             summary="Caption images (vision -> decoder)")
async def caption(request: Request):
    gw, body, uploads = await _read(request, CaptionRequest)
    images = await read_images(gw, body.images, uploads, "images")

    async def work(model, runner):
        fields = {k: getattr(body, k) for k in GEN_FIELDS} | {"num_return": body.num_captions}
        params = _generation(gw, model.caption_defaults, fields)
        pixels = await decode_images(gw, model, images)
        caps = await blip_tasks.caption(runner, pixels, prompt=body.prompt, params=params)
        tokens = sum(len(c.tokens) for cs in caps for c in cs)
        return CaptionResponse(model=model.name, usage=Usage(images=len(caps), generated_tokens=tokens),
                               captions=[[CaptionOut(text=c.text, tokens=c.tokens, logprob=c.logprob) for c in cs]
                                         for cs in caps])

    return await gw.run(request, "caption", body.model, body.timeout_s, work)


@router.post("/embeddings", response_model=EmbeddingsResponse, responses=ERRORS, response_model_exclude_none=True,
             openapi_extra=_doc(EmbeddingsRequest), summary="ITC embeddings of images and/or texts")
async def embeddings(request: Request):
    gw, body, uploads = await _read(request, EmbeddingsRequest)
    images = await read_images(gw, body.images, uploads, "images")

    async def work(model, runner):
        pixels = await decode_images(gw, model, images) if images else None
        img, txt = await blip_tasks.embed(runner, pixels, body.texts)
        dim = (img if img is not None else txt).shape[1]
        return EmbeddingsResponse(model=model.name, dim=dim,
                                  image_embeddings=img.tolist() if img is not None else None,
                                  text_embeddings=txt.tolist() if txt is not None else None)

    return await gw.run(request, "embed", body.model, body.timeout_s, work)


@router.post("/retrieval/score", response_model=ScoreResponse, responses=ERRORS, response_model_exclude_none=True,
             openapi_extra=_doc(ScoreRequest), summary="ITC cosine and/or ITM probability, images x texts")
async def score(request: Request):
    gw, body, uploads = await _read(request, ScoreRequest)
    images = await read_images(gw, body.images, uploads, "images")
    task = "embed" if "itc" in body.heads else "itm"

    async def work(model, runner):
        if "itm" in body.heads:
            model.require("itm")
        pixels = await decode_images(gw, model, images)
        out = await blip_tasks.score(runner, pixels, body.texts, body.heads)
        return ScoreResponse(model=model.name, **{h: m.tolist() for h, m in out.items()})

    return await gw.run(request, task, body.model, body.timeout_s, work)


@router.post("/retrieval/rank", response_model=RankResponse, responses=ERRORS, openapi_extra=_doc(RankRequest),
             summary="Rank candidates for one query: ITC shortlist, ITM re-rank")
async def rank(request: Request):
    gw, body, uploads = await _read(request, RankRequest)
    query = await read_images(gw, None if body.query_image is None else [body.query_image], uploads, "query_image")
    candidates = await read_images(gw, body.candidate_images, uploads, "candidate_images")

    async def work(model, runner):
        if body.rerank:
            model.require("itm")
        kwargs = dict(k_itc=body.k_itc, top_k=body.top_k, use_itm=body.rerank)
        if body.query_image is not None and body.query_text is None:
            ranked = await blip_tasks.rank(runner, query_pixels=await decode_images(gw, model, query),
                                           candidate_texts=body.candidate_texts,
                                           **kwargs)
        elif body.query_text is not None and body.query_image is None:
            cands = await decode_images(gw, model, candidates) if body.candidate_images else None
            ranked = await blip_tasks.rank(runner, query_text=body.query_text, candidate_pixels=cands, **kwargs)
        else:
            raise InvalidInputError("give exactly one of query_image and query_text", param="query_image")
        return RankResponse(model=model.name, results=[RankedOut(index=r.index, itc=r.itc, itm=r.itm)
                                                       for r in ranked])

    return await gw.run(request, "embed", body.model, body.timeout_s, work)


@router.post("/vqa", response_model=VqaResponse, responses=ERRORS, openapi_extra=_doc(VqaRequest),
             summary="Answer questions about images (generate, or rank candidates)")
async def vqa(request: Request):
    gw, body, uploads = await _read(request, VqaRequest)
    images = await read_images(gw, body.images, uploads, "images")

    async def work(model, runner):
        fields = {k: getattr(body, k) for k in ("max_new_tokens", "min_new_tokens", "num_beams")}
        params = _generation(gw, model.vqa_defaults, fields)
        candidates = body.candidates
        if candidates is None and body.rank_answers:
            candidates = model.spec.vqa.answers
            if not candidates:
                raise InvalidInputError(f"model '{model.name}' has no answer list ([vqa] answers in model.toml)",
                                        param="rank_answers")
        pixels = await decode_images(gw, model, images)
        answers = await blip_tasks.vqa(runner, pixels, body.questions, params=params, candidates=candidates)
        return VqaResponse(model=model.name, answers=[
            AnswerOut(text=a.text, tokens=a.tokens, logprob=a.logprob,
                      ranked=[RankedAnswerOut(text=r.text, prob=r.prob) for r in a.ranked] if a.ranked else None)
            for a in answers])

    return await gw.run(request, "vqa", body.model, body.timeout_s, work)


@router.post("/capfilt", response_model=CapfiltResponse, responses=ERRORS, openapi_extra=_doc(CapfiltRequest),
             summary="BLIP's CapFilt: sample synthetic captions, keep the captions ITM says match")
async def capfilt(request: Request):
    gw, body, uploads = await _read(request, CapfiltRequest)
    images = await read_images(gw, body.images, uploads, "images")

    async def work(model, runner):
        fields = {"max_new_tokens": body.max_new_tokens, "min_new_tokens": body.min_new_tokens, "seed": body.seed,
                  "top_p": body.top_p}
        # BLIP samples its synthetic captions with nucleus sampling (top-p 0.9)
        base = model.caption_defaults.replace(do_sample=True, top_p=0.9, top_k=0, num_beams=1)
        params = _generation(gw, base, fields)
        pixels = await decode_images(gw, model, images)
        results = await blip_tasks.capfilt(runner, pixels, body.texts, params=params,
                                           num_synthetic=body.num_synthetic, threshold=body.threshold)
        return CapfiltResponse(model=model.name, results=[
            [FilteredCaptionOut(text=c.text, source=c.source, itm=c.itm, kept=c.kept) for c in per]
            for per in results])

    return await gw.run(request, "capfilt", body.model, body.timeout_s, work)
