"""A model deployment's replica on Ray Serve: vlserve's own app (gateway, scheduler, engines)
over the deployment's models, answering the raw HTTP requests the ingress forwards. The app
runs in-process as ASGI, so every answer, error and limit is the one `vlserve serve` gives."""

from __future__ import annotations

import asyncio
import os

from ..api.app import create_app
from ..api.gateway import Gateway
from ..metrics import Metrics
from ..repository.repository import ModelRepository
from ..settings import Settings

REPLICA_HEADER = "x-vlserve-replica"  # which replica answered: Serve's full replica id (its actor's name)


class ModelServer:
    """Serve deployment class: one replica serves `models` (a slice of the model repository)."""

    async def __init__(self, settings: dict, models: list[str]):
        import ray
        from ray import serve

        if not ray.get_runtime_context().get_accelerator_ids().get("GPU"):
            # Ray hides no GPU from a replica it gave none: without this, device "auto" would take one
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        config = Settings(**settings)
        metrics = Metrics()
        repository = ModelRepository(config, metrics)
        repository.models = {name: m for name, m in repository.models.items() if name in models}
        self.gateway = Gateway(config, repository, metrics)
        self.app = create_app(config, self.gateway)
        self.replica = serve.get_replica_context().replica_id.to_full_id_str()
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        # Serve routes to a replica once its constructor returns: only after its models loaded
        await asyncio.wait({self.app.state.loading})

    def check_health(self) -> None:
        """A model whose device worker died after loading fails the check: Serve replaces the replica.
        (A model that never loaded stays failed, answered as vlserve answers it, not restarted in a loop.)"""
        dead = [m.name for m in self.gateway.repository.models.values() if m.state == "failed" and m.engine]
        if dead:
            raise RuntimeError(f"the device worker of {', '.join(dead)} died")

    def __del__(self) -> None:  # Serve calls it when it stops the replica
        gateway = getattr(self, "gateway", None)
        if gateway is not None:
            gateway.close()

    async def forward(self, request: dict):
        """Streams the app's answer: first {status, headers, body, more}, then, while the
        response streams (server-sent events), each further body part."""
        sent: asyncio.Queue = asyncio.Queue()
        gone = asyncio.Event()
        delivered = False

        async def receive():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": request["body"], "more_body": False}
            await gone.wait()  # the app watches for the client leaving: that is the caller going away
            return {"type": "http.disconnect"}

        app = asyncio.ensure_future(self.app(_scope(request), receive, sent.put))
        app.add_done_callback(lambda _: sent.put_nowait(None))
        try:
            start = await sent.get()
            if start is None:  # RequestGuard answers every request; reaching here is a bug
                raise RuntimeError(f"the app ended without answering {request['method']} {request['path']}")
            part = await sent.get() or {}
            more = bool(part.get("more_body"))
            yield {"status": start["status"], "body": part.get("body", b""), "more": more,
                   "headers": [*start.get("headers", []), (REPLICA_HEADER.encode(), self.replica.encode())]}
            while more:
                part = await sent.get()
                if part is None:
                    raise RuntimeError(f"the app stopped in the middle of streaming {request['path']}")
                more = bool(part.get("more_body"))
                yield part.get("body", b"")
        finally:
            gone.set()  # a caller that left mid-request cancels the request's work, as a client leaving does


def _scope(request: dict) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
            "method": request["method"], "path": request["path"], "raw_path": request["raw_path"],
            "root_path": "", "query_string": request["query"], "headers": request["headers"],
            "client": request["client"], "server": request["server"]}
