"""uvicorn inside the bridge's own event loop, started and stopped by the service.

uvicorn normally owns the process's signals; here the service does (one SIGTERM drains
consumers and webhooks together), so its signal capture is switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from bridge.config import HttpSettings

__all__ = ["HttpServer"]

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Serves an ASGI app on the configured host and port until stopped."""

    def __init__(self, app: ASGIApp, settings: HttpSettings, grace_s: float) -> None:
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            lifespan="off",
            access_log=False,
            # The bridge's own logging config (JSON, masked) stays in charge of uvicorn's loggers.
            log_config=None,
            log_level="warning",
            timeout_graceful_shutdown=max(1, int(grace_s)),
        )
        self._server = _Server(config)
        self._port = settings.port
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int | None:
        """The port actually bound (useful with port 0), once started."""
        for server in self._server.servers:
            for sock in server.sockets:
                port: int = sock.getsockname()[1]
                return port
        return None

    @property
    def serving(self) -> bool:
        """Listening and not shutting down."""
        return bool(self._server.started) and not self._server.should_exit

    async def start(self) -> None:
        """Bind and start serving; raises if the port cannot be bound."""
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                # uvicorn logs why (port in use...) and exits; the service decides what to do.
                with contextlib.suppress(SystemExit):
                    self._task.result()
                raise RuntimeError(f"the HTTP app could not listen on port {self._port}")
            await asyncio.sleep(0.01)
        log.info("HTTP app listening on port %s", self.port)

    async def stop(self) -> None:
        """Stop accepting connections and let requests in progress finish."""
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task
