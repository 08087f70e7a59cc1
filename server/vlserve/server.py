"""Running the app under uvicorn with graceful shutdown: on SIGTERM (or SIGINT) readiness
turns 503 at once, new requests get 503, in-flight ones get `drain_grace_s` to finish;
those still running then are answered 503 (retry elsewhere), and the server stops. A
second signal stops it at once."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from . import logs
from .api.app import create_app
from .connections import LimitedH11Protocol
from .settings import Settings

log = logging.getLogger("vlserve")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway):
        super().__init__(config)
        self.gateway = gateway
        self._draining: asyncio.Task | None = None

    def handle_exit(self, sig, frame) -> None:
        if self._draining is not None or self.gateway.draining:
            return super().handle_exit(sig, frame)  # second signal: stop now
        log.info("signal %s: draining (up to %.0fs for in-flight requests)", sig, self.gateway.settings.drain_grace_s)
        self.gateway.draining = True
        loop = asyncio.get_event_loop()
        self._draining = loop.create_task(self._drain_then_exit(sig, frame))

    async def _drain_then_exit(self, sig, frame) -> None:
        finished = await self.gateway.drain()
        if not finished:
            log.warning("grace period over with %d request(s) in flight", self.gateway.in_flight)
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)
    app = create_app(settings)
    protocol = LimitedH11Protocol.with_limits(settings.header_timeout_s, settings.max_connections)
    # after the drain answered every request, uvicorn only has to close connections
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            http=protocol, timeout_keep_alive=settings.keep_alive_s, timeout_graceful_shutdown=5,
                            log_config=None)  # uvicorn's lines go through logs.configure's handler
    DrainingServer(config, app.state.gateway).run()
