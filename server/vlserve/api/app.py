"""The FastAPI application: `create_app(settings)`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response

from .. import __version__
from ..settings import Settings
from . import errors, schemas
from .gateway import ClientGone, Gateway
from .docs_pages import install_docs_pages
from .middleware import RequestGuard
from .openai_front import openai_models
from .openapi_doc import build_openapi
from .chat_front import router as chat_router
from .kserve_front import router as kserve_router
from .playground import mount_static
from .playground import router as playground_router
from .rerank_front import router as rerank_router
from .routes import router

log = logging.getLogger("vlserve.api")


def create_app(settings: Settings | None = None, gateway: Gateway | None = None) -> FastAPI:
    settings = settings or Settings()
    gw = gateway or Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(gw.load_models())  # live at once, ready when loaded
        app.state.loading = loading
        try:
            yield
        finally:
            loading.cancel()
            gw.close()

    # redirect_slashes off: Starlette builds those redirects from the Host header
    app = FastAPI(title="vlserve", version=__version__, lifespan=lifespan, redirect_slashes=False,
                  description="Captioning, image-text retrieval (ITC / ITM) and VQA with BLIP-family models. "
                  f"Request bodies: {schemas.server_limit('max_body_bytes')}.",
                  docs_url=None, redoc_url=None)  # docs_pages serves them without a CDN
    install_docs_pages(app)
    app.state.gateway = gw
    errors.install(app)
    app.add_middleware(RequestGuard, gateway=gw)
    if settings.cors_origin_list:  # outermost: a preflight is answered before the guard asks for a key
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-api-key", "x-request-id"],
                           expose_headers=["x-request-id"], max_age=600)

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone):
        return Response(status_code=499)  # nobody reads it: the client left

    app.include_router(router)
    app.include_router(rerank_router)
    app.include_router(chat_router)
    app.include_router(kserve_router)
    app.include_router(playground_router)
    mount_static(app)

    started = int(time.time())

    @app.get("/v1/models", response_model=schemas.ModelsResponse, tags=["admin"])
    async def models(request: Request):
        described = [m.describe() for m in gw.repository.models.values()]
        return {"models": described, "object": "list",
                "data": [m.model_dump() for m in openai_models(described, started)]}

    def status(word: str) -> dict:  # the probes' answer, documented with its example
        return {"content": {"application/json": {"example": {"status": word}}}}

    @app.get("/health/live", tags=["admin"], responses={200: status("live")})
    async def live():
        return {"status": "live"}

    @app.get("/health/ready", tags=["admin"], responses={200: status("ready"), 503: {"model": schemas.ErrorResponse}})
    async def ready():
        if gw.ready:
            return {"status": "ready"}
        return errors.error_response(503, "not_ready", gw.not_ready_reason(), headers={"Retry-After": "1"})

    text = {gw.metrics.content_type: {"schema": {"type": "string"}, "example": schemas.METRICS_EXAMPLE}}

    @app.get("/metrics", tags=["admin"], response_class=Response,
             responses={200: {"description": "Prometheus text exposition", "content": text}})
    async def metrics():
        return Response(gw.metrics.render(), media_type=gw.metrics.content_type)

    def openapi():
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi
    return app
