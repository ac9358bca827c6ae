"""The HTTP app: Twilio webhooks, probes, metrics and the OpenAPI document, on Starlette.

Starlette rather than a larger framework: the webhook handler needs the raw body and URL
exactly as Twilio signed them, so there is nothing for request models to do, and the OpenAPI
document is short enough to write from the same table of routes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge import __version__
from bridge.config import WebhookSettings
from bridge.http.openapi import text_response
from bridge.inbound.webhooks.endpoint import webhook_openapi, webhook_route
from bridge.inbound.webhooks.receiver import WebhookReceiver
from bridge.instances.api import instances_openapi
from bridge.observability.metrics import CONTENT_TYPE, exposition

__all__ = ["create_app", "openapi_document"]

# What answers while start-up waits for the broker: the probes, so that Kubernetes sees a live
# pod that is not ready yet, the metrics and this document.
ALWAYS_SERVED = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})


def create_app(
    receiver: WebhookReceiver,
    settings: WebhookSettings,
    readiness: Callable[[], Mapping[str, bool]],
    admin: Sequence[Route] = (),
    *,
    started: Callable[[], bool] = lambda: True,
) -> ASGIApp:
    """The ASGI app; ``readiness`` gives the conditions for receiving traffic, all required;
    ``admin`` are the instances API's routes, when it is enabled. Until ``started()``, every
    path but the probes, metrics and OpenAPI document is answered 503."""

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        checks = dict(readiness())
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, 200 if ready else 503)

    async def metrics(_: Request) -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE)

    document = openapi_document(instances=bool(admin))

    async def openapi(_: Request) -> Response:
        return JSONResponse(document)

    app = Starlette(
        routes=[
            webhook_route(receiver, settings),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            *admin,
        ]
    )
    # A path with a trailing slash is not a route (404), never a 307 to one: Twilio does not
    # follow redirects with the signed POST, and a redirect is no documented answer.
    app.router.redirect_slashes = False
    return _UntilStarted(app, started)


class _UntilStarted:
    """503 for webhooks and the instances API until every component has started: their
    handlers need the producer and the logs that start-up is still waiting for."""

    def __init__(self, app: ASGIApp, started: Callable[[], bool]) -> None:
        self._app = app
        self._started = started
        self._open = False  # once started, a single check per request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._open and scope["type"] == "http" and scope["path"] not in ALWAYS_SERVED:
            self._open = self._started()
            if not self._open:
                answer = PlainTextResponse("starting: not serving yet (see /readyz)", 503)
                await answer(scope, receive, send)
                return
        await self._app(scope, receive, send)


def _readiness(description: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "ready": {"type": "boolean"},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
        "required": ["ready", "checks"],
    }
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(*, instances: bool = False) -> dict[str, Any]:
    """OpenAPI 3.1 description of the HTTP app (with the instances API when it is served)."""
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "twilio-kafka-bridge", "version": __version__},
        "paths": {
            **webhook_openapi(),
            "/healthz": {
                "get": {"summary": "Liveness", "responses": {"200": text_response("alive")}}
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": text_response("Prometheus text exposition format")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: started and not stopping, in the consumer group, "
                    "broker reachable, HTTP serving",
                    "responses": {
                        "200": _readiness("Ready for traffic."),
                        "503": _readiness("Not ready; the false checks say why."),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
        },
    }
    if instances:
        paths, components = instances_openapi()
        document["paths"].update(paths)
        document["components"] = components
    return document
