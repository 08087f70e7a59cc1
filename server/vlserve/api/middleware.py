"""The ASGI layer every HTTP request passes first, before any route runs:

- counts it: `vlserve_requests_received_total` when it arrives and
  `vlserve_requests_total{model,task,outcome,status}` when it is answered, whatever
  answers it (a route, a schema error, an unknown path, this layer), so the two balance;
- checks the API key; once the server drains, refuses what arrives (503) while what
  arrived before is still served;
- bounds the body: a Content-Length over the limit is refused unread (413), and the bytes
  actually received are counted for every transfer encoding, chunked included; a body
  that does not arrive within `body_timeout_s` is answered 408;
- is the last error boundary: an exception no handler took becomes a JSON 500 here and
  the connection stays usable (Starlette's own boundary re-raises, and the server then
  drops the keep-alive connection without saying so).
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import logging
import re
import time
import uuid

from ..errors import NotReadyError, PayloadTooLargeError, RequestTimeoutError, UnauthorizedError, UnavailableError
from ..logs import NO_REQUEST
from .docs_pages import DOCS_ASSETS
from .errors import error_response, status_of
from .playground import is_page

log = logging.getLogger("vlserve.api")

# metric task label per route: the route's own name
TASKS = {"/v1/caption": "caption", "/v1/embeddings": "embed", "/v1/retrieval/score": "score",
         "/v1/retrieval/rank": "rank", "/v1/vqa": "vqa", "/v1/capfilt": "capfilt", "/v1/models": "models",
         "/v1/rerank": "rank", "/rerank": "rank", "/v1/chat/completions": "chat"}
# never need the key, never counted, answered while draining (KServe and Triton probe the /v2 pair)
PROBES = ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready")
ADMIN = ("/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


def is_admin(path: str) -> bool:
    """The admin pages and the docs pages' scripts and styles: one key rule for them all."""
    return path in ADMIN or path.startswith(DOCS_ASSETS + "/")


def outcome_of(status: int) -> str:
    if status < 400:
        return "succeeded"
    return {499: "cancelled", 503: "rejected", 504: "expired"}.get(status, "invalid" if status < 500 else "failed")


class _Body:
    """The request's `receive`, counting body bytes against the limit and the deadline."""

    def __init__(self, receive, max_bytes: int, timeout_s: float):
        self.receive, self.max_bytes = receive, max_bytes
        self.deadline = asyncio.get_running_loop().time() + timeout_s
        self.timeout_s = timeout_s
        self.read = 0
        self.complete = False

    async def __call__(self):
        if self.complete:  # later receives wait for the disconnect: no deadline there
            return await self.receive()
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self.receive()
        except TimeoutError:
            raise RequestTimeoutError(f"the request body did not arrive within {self.timeout_s:g} s") from None
        if message["type"] == "http.request":
            self.read += len(message.get("body", b""))
            if self.read > self.max_bytes:
                raise PayloadTooLargeError(f"request body is larger than {self.max_bytes} bytes")
            self.complete = not message.get("more_body", False)
        return message


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default=NO_REQUEST)
REQUEST_ID_OK = re.compile(r"[\w.:@/+=-]{1,128}")  # what a client's id may be; else a new one is made


def _with_request_id(factory):
    def make(*args, **kwargs):
        record = factory(*args, **kwargs)
        request_id = REQUEST_ID.get()
        if request_id != NO_REQUEST:  # outside requests, none: other libraries' `extra={"request_id": ...}` may set it
            record.request_id = request_id
        return record
    return make


logging.setLogRecordFactory(_with_request_id(logging.getLogRecordFactory()))  # records made in a request: `request_id`


class RequestGuard:
    def __init__(self, app, gateway):
        self.app, self.gateway = app, gateway

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        gw, path = self.gateway, scope["path"]
        counted = path not in PROBES and path != "/metrics"
        task = TASKS.get(path) or ("infer" if path.startswith("/v2/") and path.endswith("/infer") else "other")
        info = scope["vlserve"] = {"model": "", "outcome": None}
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID_OK.fullmatch(given) else uuid.uuid4().hex
        id_token = REQUEST_ID.set(request_id)  # until this request is answered
        body = _Body(receive, gw.settings.max_body_bytes, gw.settings.body_timeout_s)
        status: list[int] = []

        async def sending(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
                if not body.complete and message["status"] in (408, 413):  # the rest stays unread
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        start = time.monotonic()
        if counted:
            gw.request_started(task)
        try:
            refusal = self._refusal(scope, path)
            if refusal is not None:
                retry = {"Retry-After": str(refusal.retry_after_s)} if isinstance(refusal, UnavailableError) else None
                await error_response(status_of(refusal), refusal.type, refusal.message, refusal.param, retry)(
                    scope, receive, sending)
            else:
                await self.app(scope, body, sending)
        except Exception:  # noqa: BLE001 - the last boundary: nothing escapes to the server
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            if not status:
                await error_response(500, "internal_error", "internal server error")(scope, receive, sending)
        finally:
            if counted:
                code = status[0] if status else 500
                gw.request_finished(info["model"], task, info["outcome"] or outcome_of(code), code,
                                    time.monotonic() - start)
            REQUEST_ID.reset(id_token)

    def _refusal(self, scope, path: str):
        """The error that answers this request before it runs, if any."""
        settings = self.gateway.settings
        key = settings.api_key
        needs_key = (key is not None and path not in PROBES and not is_page(path)  # the page asks with the key
                     and (settings.auth_metrics_and_docs or not is_admin(path)))
        headers = dict(scope.get("headers") or [])
        if needs_key and not _key_matches(headers, key.get_secret_value()):
            return UnauthorizedError("missing or wrong API key (send 'Authorization: Bearer <key>')")
        if self.gateway.draining and path not in PROBES and not is_admin(path) and path != "/v1/models":
            return NotReadyError("the server is shutting down")  # those that came before are still served
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > settings.max_body_bytes:
            return PayloadTooLargeError(f"request body is {int(length)} bytes; the limit is {settings.max_body_bytes}")
        return None


def _key_matches(headers: dict, key: str) -> bool:
    scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer":
        given = headers.get(b"x-api-key", b"").decode("latin-1")
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), key.encode("utf-8"))
