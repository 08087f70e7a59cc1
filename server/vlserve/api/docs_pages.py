"""`/docs` (Swagger UI) and `/redoc` with their scripts and styles served from the
`fastapi-offline` package under `/docs/assets/`: they work with no network (FastAPI's own
pages load them from a CDN)."""

from __future__ import annotations

import importlib.resources

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles

DOCS_ASSETS = "/docs/assets"  # the middleware lets these through as it lets /docs through
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def install_docs_pages(app: FastAPI) -> None:
    """Call with the app made with docs_url=None, redoc_url=None."""
    folder = importlib.resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(folder)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request):
        root = request.scope.get("root_path", "")  # behind a proxy's path prefix
        base = root + DOCS_ASSETS
        return get_swagger_ui_html(openapi_url=root + app.openapi_url, title=f"{app.title} - Swagger UI",
                                   oauth2_redirect_url=root + OAUTH2_REDIRECT,
                                   swagger_js_url=f"{base}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{base}/swagger-ui.css", swagger_favicon_url=f"{base}/favicon.png")

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect():
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request):
        root = request.scope.get("root_path", "")
        base = root + DOCS_ASSETS
        return get_redoc_html(openapi_url=root + app.openapi_url,
                              title=f"{app.title} - ReDoc", redoc_js_url=f"{base}/redoc.standalone.js",
                              redoc_favicon_url=f"{base}/favicon.png", with_google_fonts=False)
