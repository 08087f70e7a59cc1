"""The v1 task routes. Each reads its body (JSON or multipart) and its images (checked before
the deadline starts), then runs its task through the gateway: images are decoded in the
thread pool, graphs run on the models' device workers."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..engine.generation.params import GenerationOptions, GenerationParams
from ..errors import InvalidInputError
from ..tasks import defaults
from ..tasks.capfilt import capfilt as capfilt_task
from ..tasks.caption import caption as caption_task
from ..tasks.retrieval import embed as embed_task
from ..tasks.retrieval import rank as rank_task
from ..tasks.retrieval import score as score_task
from ..tasks.vqa import vqa as vqa_task
from .decoding import decode_images, read_images
from .gateway import Gateway
from .inputs import read_request
from .openapi_doc import form_ref
from .openai_front import OpenAIEmbeddingsRequest, OpenAIEmbeddingsResponse, embed_openai, is_openai_body
from .schemas import (AnswerOut, CapfiltRequest, CapfiltResponse, CaptionOut, CaptionRequest, CaptionResponse,
                      EmbeddingsRequest, EmbeddingsResponse, ERRORS, FilteredCaptionOut, RankedAnswerOut,
                      RankedOut, RankRequest, RankResponse, ScoreRequest, ScoreResponse, Usage, VqaRequest,
                      VqaResponse)

router = APIRouter(prefix="/v1")


def _doc(schema, json_variant=None) -> dict:
    """Document the body (JSON or multipart, whose images are files) in OpenAPI; the route
    parses it itself. json_variant: a second JSON body the route also takes (another protocol's)."""
    ref = {"$ref": f"#/components/schemas/{schema.__name__}"}
    json_ref = ref if json_variant is None else \
        {"oneOf": [ref, {"$ref": f"#/components/schemas/{json_variant.__name__}"}]}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": json_ref},
                                                          "multipart/form-data": {"schema": form_ref(schema)}}}}


async def _read(request: Request, schema, variant=None):
    """(gateway, validated body, uploaded files) of a task request."""
    gw: Gateway = request.app.state.gateway
    body, uploads = await read_request(request, schema, gw.settings, gw.in_thread, variant)
    return gw, body, uploads


def _generation(gw: Gateway, base: GenerationParams, fields: dict) -> GenerationParams:
    return base.replace(**fields).validate(max_new_tokens=gw.settings.max_new_tokens,
                                           max_beams=gw.settings.max_beams)


def _given(body, names) -> dict:
    return {k: getattr(body, k) for k in names if getattr(body, k) is not None}


@router.post("/caption", response_model=CaptionResponse, responses=ERRORS, response_model_exclude_none=True,
             openapi_extra=_doc(CaptionRequest),
             summary="Caption images (vision -> decoder)")
async def caption(request: Request):
    gw, body, uploads = await _read(request, CaptionRequest)
    images = await read_images(gw, body.images, uploads, "images")

    async def work(served, models):
        fields = _given(body, GenerationOptions.model_fields) | {"num_return": body.num_captions}
        params = _generation(gw, served["model"].caption_defaults, fields)
        pixels = await decode_images(gw, served["model"], images)
        out = await caption_task(models["model"], pixels, prompt=body.prompt, params=params,
                                 with_embeddings=body.return_embeddings)
        caps, embeddings = out if body.return_embeddings else (out, None)
        tokens = sum(len(c.tokens) for cs in caps for c in cs)
        return CaptionResponse(model=served["model"].name, usage=Usage(images=len(caps), generated_tokens=tokens),
                               captions=[[CaptionOut(text=c.text, tokens=c.tokens, logprob=c.logprob) for c in cs]
                                         for cs in caps],
                               image_embeddings=embeddings.tolist() if embeddings is not None else None)

    return await gw.run(request, "caption", body.timeout_s, work, model=(body.model, "caption"))


@router.post("/embeddings", response_model=EmbeddingsResponse | OpenAIEmbeddingsResponse, responses=ERRORS,
             response_model_exclude_none=True, openapi_extra=_doc(EmbeddingsRequest, OpenAIEmbeddingsRequest),
             summary="ITC embeddings of images and/or texts (vlserve's body, or OpenAI's: `input`)")
async def embeddings(request: Request):
    gw, body, uploads = await _read(request, EmbeddingsRequest, (is_openai_body, OpenAIEmbeddingsRequest))
    if isinstance(body, OpenAIEmbeddingsRequest):
        return await embed_openai(request, gw, body)
    images = await read_images(gw, body.images, uploads, "images")

    async def work(served, models):
        pixels = await decode_images(gw, served["model"], images) if images else None
        img, txt = await embed_task(models["model"], pixels, body.texts)
        dim = (img if img is not None else txt).shape[1]
        return EmbeddingsResponse(model=served["model"].name, dim=dim,
                                  image_embeddings=img.tolist() if img is not None else None,
                                  text_embeddings=txt.tolist() if txt is not None else None)

    return await gw.run(request, "embed", body.timeout_s, work, model=(body.model, "embed"))


@router.post("/retrieval/score", response_model=ScoreResponse, responses=ERRORS, response_model_exclude_none=True,
             openapi_extra=_doc(ScoreRequest), summary="ITC cosine and/or ITM probability, images x texts")
async def score(request: Request):
    gw, body, uploads = await _read(request, ScoreRequest)
    images = await read_images(gw, body.images, uploads, "images")

    async def work(served, models):
        pixels = await decode_images(gw, served["model"], images)
        out = await score_task(models["model"], pixels, body.texts, body.heads)
        return ScoreResponse(model=served["model"].name, **{h: m.tolist() for h, m in out.items()})

    return await gw.run(request, "score", body.timeout_s, work, model=(body.model, "score"))


@router.post("/retrieval/rank", response_model=RankResponse, responses=ERRORS, openapi_extra=_doc(RankRequest),
             summary="Rank candidates for one query: ITC shortlist, ITM re-rank")
async def rank(request: Request):
    gw, body, uploads = await _read(request, RankRequest)
    if (body.query_image is None) == (body.query_text is None):
        raise InvalidInputError("give exactly one of query_image and query_text", param="query_image")
    image_query = body.query_image is not None
    images = await read_images(gw, [body.query_image] if image_query else body.candidate_images, uploads,
                               "query_image" if image_query else "candidate_images")

    async def work(served, models):
        model, reranker = served["model"], served["reranker"]
        pixels = await decode_images(gw, model, images) if images else None
        other = reranker is not model and body.rerank is not False and images is not None
        rerank_pixels = await decode_images(gw, reranker, images) if other else None
        kwargs = dict(k_itc=body.k_itc, top_k=body.top_k, rerank=body.rerank, reranker=models["reranker"],
                      rerank_pixels=rerank_pixels)
        if image_query:
            ranked = await rank_task(models["model"], query_pixels=pixels, candidate_texts=body.candidate_texts,
                                     **kwargs)
        else:
            ranked = await rank_task(models["model"], query_text=body.query_text, candidate_pixels=pixels, **kwargs)
        return RankResponse(model=model.name, results=[RankedOut(index=r.index, itc=r.itc, itm=r.itm)
                                                       for r in ranked])

    return await gw.run(request, "rank", body.timeout_s, work, model=(body.model, "rank"),
                        reranker=(body.reranker, "score"))


@router.post("/vqa", response_model=VqaResponse, responses=ERRORS, openapi_extra=_doc(VqaRequest),
             summary="Answer questions about images (generate, rank candidates, or classify)")
async def vqa(request: Request):
    gw, body, uploads = await _read(request, VqaRequest)
    images = await read_images(gw, body.images, uploads, "images")

    async def work(served, models):
        model = served["model"]
        params = _generation(gw, model.vqa_defaults, _given(body, ("max_new_tokens", "min_new_tokens", "num_beams")))
        candidates = body.candidates
        if candidates is None and body.rank_answers:
            candidates = list(model.capabilities.answers)
            if not candidates:
                raise InvalidInputError(f"model '{model.name}' has no answer list ([vqa] answers in model.toml)",
                                        param="rank_answers")
        pixels = await decode_images(gw, model, images)
        answers = await vqa_task(models["model"], pixels, body.questions, params=params, candidates=candidates,
                                 mode=body.mode, top_k=body.top_k)
        return VqaResponse(model=model.name, answers=[
            AnswerOut(text=a.text, tokens=a.tokens, logprob=a.logprob,
                      ranked=[RankedAnswerOut(text=r.text, prob=r.prob) for r in a.ranked] if a.ranked else None)
            for a in answers])

    return await gw.run(request, "vqa", body.timeout_s, work, model=(body.model, "vqa"))


@router.post("/capfilt", response_model=CapfiltResponse, responses=ERRORS, openapi_extra=_doc(CapfiltRequest),
             summary="BLIP's CapFilt: sample synthetic captions, keep the captions ITM says match")
async def capfilt(request: Request):
    gw, body, uploads = await _read(request, CapfiltRequest)
    images = await read_images(gw, body.images, uploads, "images")
    captioner = body.captioner or body.model
    judge = body.filter or body.model
    roles = {"model": (captioner, "capfilt")} if captioner == judge else \
        {"model": (captioner or judge, "caption"), "filter": (judge or captioner, "score")}

    async def work(served, models):
        model, filter_model = served["model"], served.get("filter", served["model"])
        fields = _given(body, ("max_new_tokens", "min_new_tokens", "seed", "top_p"))
        params = _generation(gw, model.caption_defaults.replace(**defaults.CAPFILT_SAMPLING), fields)
        pixels = await decode_images(gw, model, images)
        filter_pixels = await decode_images(gw, filter_model, images) if filter_model is not model else None
        results = await capfilt_task(models["model"], pixels, body.texts, params=params,
                                     num_synthetic=body.num_synthetic, threshold=body.threshold,
                                     filter=models.get("filter"), filter_pixels=filter_pixels)
        return CapfiltResponse(model=model.name, results=[
            [FilteredCaptionOut(text=c.text, source=c.source, itm=c.itm, kept=c.kept) for c in per]
            for per in results])

    return await gw.run(request, "capfilt", body.timeout_s, work, **roles)
