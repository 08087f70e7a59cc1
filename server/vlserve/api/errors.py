"""The one error boundary: typed failures become JSON errors with their status; anything
else is logged with its traceback and answered 500 without internals."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .. import errors as e

log = logging.getLogger("vlserve.api")

STATUS = [  # most specific first
    (e.TextTooLongError, 400), (e.InvalidImageError, 415), (e.ImageTooLargeError, 413),
    (e.InvalidInputError, 400), (e.UnsupportedTaskError, 400), (e.ModelNotFoundError, 404),
    (e.UnauthorizedError, 401), (e.UnsupportedMediaError, 415), (e.PayloadTooLargeError, 413),
    (e.UnavailableError, 503), (e.DeadlineExceededError, 504), (e.CheckpointError, 500),
    (e.RequestTimeoutError, 408), (e.ModelFailedError, 500),
]


class SchemaError(e.InvalidInputError):
    """The body does not match the route's schema."""

    type = "invalid_request"


def status_of(exc: BaseException) -> int:
    if isinstance(exc, SchemaError):
        return 422
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 400 if isinstance(exc, e.VlserveError) else 500


def error_response(status: int, kind: str, message: str, param: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, "param": param}}, status_code=status,
                        headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(e.VlserveError)
    async def _typed(request: Request, exc: e.VlserveError):
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, e.UnavailableError) else None
        return error_response(status_of(exc), exc.type, exc.message, exc.param, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        return error_response(422, "invalid_request", str(first["msg"]), param)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, kind, str(exc.detail), None, getattr(exc, "headers", None))

    # Anything else reaches middleware.RequestGuard, which answers 500 and keeps the connection.
