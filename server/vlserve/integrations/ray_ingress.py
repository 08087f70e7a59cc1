"""The Ray Serve ingress: vlserve's HTTP API in front of one deployment per model (or model group).

A request is forwarded raw (method, path, query, headers, body) to the deployment of the model it
names (the JSON body's or multipart form's `model`, else `captioner`/`filter`/`reranker`; the
path's for /v2/models/{name}/...; else the default model's), where vlserve's own app answers it.
Routes that span models (/v1/models, the health probes, /metrics) ask every deployment and merge.
A replica that dies mid-request is retried on another (inference is idempotent); when no replica
answers, the client gets one JSON 503 in vlserve's error format.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..api.chat_stream import sse
from ..api.errors import error_response
from ..settings import Settings
from .ray_merge import Answer, merge_metrics, merge_models
from .ray_replica import REPLICA_HEADER

log = logging.getLogger("vlserve.ray")

SPANNING = ("/v1/models", "/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/metrics")
NAMING_FIELDS = ("model", "captioner", "filter", "reranker")  # the first one a body gives picks the deployment
ROUTING_S = 30.0  # beyond the request deadline: time to reach a replica (one may be starting)
PROBE_S = 5.0  # a health probe waits no longer for a deployment with no replica up


def unavailable(message: str, kind: str = "unavailable") -> Response:
    return error_response(503, kind, message, headers={"Retry-After": "1"})


class Ingress:
    """Serve deployment class. deployments: name -> handle; models: model name -> its deployment
    (in the repository's order); default: the deployment of requests that name no model."""

    def __init__(self, deployments: dict, models: dict[str, str], default: str, settings: dict, attempts: int):
        self.handles = {name: handle.options(stream=True) for name, handle in deployments.items()}
        self.models, self.default, self.attempts = models, default, attempts
        self.settings = Settings(**settings)

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._answer(request)
        except Exception:  # noqa: BLE001 - the last boundary: Serve's own 500 is not vlserve's JSON
            log.exception("ingress failed on %s %s", request.method, request.url.path)
            return error_response(500, "internal_error", "internal server error")

    async def _answer(self, request: Request) -> Response:
        scope = request.scope
        path, raw_path = scope["path"], scope.get("raw_path") or scope["path"].encode()
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # Serve keeps the route prefix in the path
            path, raw_path = path[len(root):] or "/", raw_path[len(root.encode()):] or b"/"
        try:
            body = await self._body(request)
        except TimeoutError:  # as middleware.RequestGuard answers a body that does not arrive
            return error_response(408, "request_timeout", f"the request body did not arrive within "
                                  f"{self.settings.body_timeout_s:g} s", headers={"connection": "close"})
        forwarded = {"method": request.method, "path": path, "raw_path": raw_path, "query": scope["query_string"],
                     "headers": list(scope["headers"]), "client": scope.get("client"), "server": scope.get("server"),
                     "body": body}
        incoming_id = request.headers.get("x-request-id", "").encode("latin-1")
        if request.method == "GET" and path in SPANNING:
            return await self._spanning(path, forwarded, incoming_id)
        deployment = self.default
        if len(self.handles) > 1:  # parsing a body (a form spools its images) only when there is a choice
            deployment = self.models.get(await self._named(path, request.headers.get("content-type", ""), body),
                                         self.default)
        asked = await self._ask(deployment, forwarded)
        if isinstance(asked, Response):
            return asked
        first, stream = asked
        headers = _without_echo(first["headers"], incoming_id)
        if not first["more"]:
            return _raw(Response(first["body"], first["status"]), headers)
        return _raw(StreamingResponse(self._rest(first["body"], stream, deployment, headers), first["status"]),
                    headers)

    async def _body(self, request: Request) -> bytes:
        """The body, read as vlserve reads it; one over the limit is cut just past the limit and the
        replica refuses it (413) with vlserve's own message; a Content-Length over it is not read."""
        limit = self.settings.max_body_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return b""
        chunks, size = [], 0
        async with asyncio.timeout(self.settings.body_timeout_s):
            async for chunk in request.stream():
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    break
        return b"".join(chunks)

    @staticmethod
    async def _named(path: str, content_type: str, body: bytes) -> str | None:
        """The model a request names; None where it names none (or its body cannot be read:
        the default deployment then answers that error)."""
        if path.startswith("/v2/models/"):
            return unquote(path.split("/")[3]) or None
        kind = content_type.split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            return await _form_model(content_type, body)
        try:
            data = json.loads(body) if body and kind in ("", "application/json") else None
        except (ValueError, RecursionError):
            return None
        if isinstance(data, dict):
            return next((v for f in NAMING_FIELDS if isinstance(v := data.get(f), str)), None)
        return None

    async def _ask(self, deployment: str, forwarded: dict, wait_s: float | None = None):
        """(the first part of the deployment's answer, the stream of the rest), or the 503 to
        answer. A replica that dies (or cannot be reached) before answering is replaced by another."""
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + (wait_s or self.settings.request_timeout_s + ROUTING_S)
        failure = None
        for attempt in range(1, self.attempts + 1):
            stream = self.handles[deployment].forward.remote(forwarded)
            try:
                async with asyncio.timeout_at(deadline):
                    return await stream.__anext__(), stream
            except (RayActorError, ReplicaUnavailableError) as exc:
                failure = exc
                log.warning("deployment %s: replica failed on %s (%s); attempt %d of %d", deployment,
                            forwarded["path"], type(exc).__name__, attempt, self.attempts)
                await asyncio.sleep(0.1 * attempt)  # time for the router to hear of the dead replica
            except asyncio.CancelledError:  # the client left: its work on the replica goes too
                stream.cancel()
                raise
            except TimeoutError:
                stream.cancel()
                return unavailable(f"no replica of deployment '{deployment}' answered in time; send it again")
            except BackPressureError:
                return unavailable(f"every replica of deployment '{deployment}' is at its limit of queued "
                                   "requests", "queue_full")
            except DeploymentUnavailableError:
                return unavailable(f"deployment '{deployment}' is unavailable")
        return unavailable(f"deployment '{deployment}': the replica serving this request failed "
                           f"({type(failure).__name__}), {self.attempts} tries in all; send it again")

    async def _rest(self, first: bytes, stream, deployment: str, headers: list):
        if first:
            yield first
        try:
            async for part in stream:
                yield part
        except (asyncio.CancelledError, GeneratorExit):  # the client left mid-stream
            stream.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - once streaming, the answer cannot be sent again
            log.warning("deployment %s: the replica streaming an answer failed (%s)", deployment, type(exc).__name__)
            if not dict(headers).get(b"content-type", b"").startswith(b"text/event-stream"):
                raise  # the connection is cut: the client sees a broken answer, never a whole-looking one
            yield sse({"error": {"type": "unavailable", "param": None, "message": "the replica serving this "
                                 "stream stopped before it ended; send the request again"}})
            yield sse("[DONE]")

    async def _whole(self, deployment: str, forwarded: dict, wait_s: float | None) -> Answer | Response:
        asked = await self._ask(deployment, forwarded, wait_s)
        if isinstance(asked, Response):
            return asked
        first, stream = asked
        body = first["body"] + b"".join([part async for part in stream]) if first["more"] else first["body"]
        return Answer(first["status"], first["headers"], body)

    async def _spanning(self, path: str, forwarded: dict, incoming_id: bytes) -> Response:
        """Every deployment's answer, merged as one server over all their models would answer."""
        names = list(self.handles)
        probe = path.startswith(("/health/", "/v2/health/"))
        answers = await asyncio.gather(*(self._whole(name, forwarded, PROBE_S if probe else None) for name in names))
        if probe:
            ok = [a for a in answers if isinstance(a, Answer) and a.status == 200]
            all_needed = path.endswith("/ready") and self.settings.strict_readiness
            if ok and (len(ok) == len(answers) or not all_needed):
                return _raw(Response(ok[0].body, 200), _without_echo(ok[0].headers, incoming_id))
        failed = next((a for a in answers if not isinstance(a, Answer) or a.status != 200), None)
        if isinstance(failed, Answer):
            return _raw(Response(failed.body, failed.status), _without_echo(failed.headers, incoming_id))
        if failed is not None:
            return failed
        # a merged answer is no one replica's: its headers are the first one's, less the replica's name
        headers = [(k, v) for k, v in _without_echo(answers[0].headers, incoming_id) if k != REPLICA_HEADER.encode()]
        merged = merge_models(list(self.models), answers) if path == "/v1/models" else merge_metrics(names, answers)
        return _merged(merged, headers)


def _without_echo(headers: list, incoming_id: bytes) -> list:
    """Serve's proxy adds the request's id to every answer; vlserve's same id is dropped, not doubled."""
    return [(k, v) for k, v in headers if not (k.lower() == b"x-request-id" and v == incoming_id)]


def _raw(response: Response, headers: list) -> Response:
    """The response with the replica's headers as they were (length and type included)."""
    response.raw_headers = list(headers)
    return response


def _merged(response: Response, headers: list) -> Response:
    """The merged body with its own length and type, and the rest of a replica's headers."""
    own = {k for k, _ in response.raw_headers}
    response.raw_headers = [*response.raw_headers, *((k, v) for k, v in headers if k.lower() not in own)]
    return response


async def _form_model(content_type: str, body: bytes) -> str | None:
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    form_request = Request({"type": "http", "method": "POST", "headers": [(b"content-type", content_type.encode())]},
                           receive)
    try:
        async with form_request.form() as form:
            return next((v for f in NAMING_FIELDS if isinstance(v := form.get(f), str)), None)
    except Exception:  # noqa: BLE001 - a malformed form: the deployment answers vlserve's error for it
        return None
