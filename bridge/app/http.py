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

from bridge import __version__
from bridge.config import WEBHOOK_FAMILIES, WebhookSettings
from bridge.http.body import BodyTooLarge, read_body
from bridge.inbound.webhooks.receiver import WebhookReceiver, WebhookRequest, public_url
from bridge.instances.api import instances_openapi
from bridge.observability.metrics import CONTENT_TYPE, WEBHOOKS, exposition
from bridge.twilio.encoding import FORM

__all__ = ["create_app", "openapi_document"]


def create_app(
    receiver: WebhookReceiver,
    settings: WebhookSettings,
    readiness: Callable[[], Mapping[str, bool]],
    admin: Sequence[Route] = (),
) -> Starlette:
    """The ASGI app; ``readiness`` gives the conditions for receiving traffic, all required;
    ``admin`` are the instances API's routes, when it is enabled."""

    async def webhook(request: Request) -> Response:
        family = request.path_params["family"]
        if family not in WEBHOOK_FAMILIES:
            known = ", ".join(WEBHOOK_FAMILIES)
            WEBHOOKS.labels("unknown", "not_found").inc()  # never the path: anyone can send it
            return PlainTextResponse(f"unknown webhook family; known: {known}", 404)
        try:
            body = await read_body(request, settings.max_body_bytes)
        except BodyTooLarge:
            WEBHOOKS.labels(family, "too_large").inc()
            return PlainTextResponse(f"body over {settings.max_body_bytes} bytes", 413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        url = public_url(
            settings,
            scheme=request.url.scheme,
            host=request.headers.get("host", request.url.netloc),
            path=request.scope.get("raw_path", request.url.path.encode()).decode("latin-1"),
            query=request.scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
        )
        answer = await receiver.receive(WebhookRequest(family, request.method, url, headers, body))
        return Response(answer.body, answer.status, media_type=answer.content_type)

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

    return Starlette(
        routes=[
            Route("/webhooks/twilio/{family}", webhook, methods=["GET", "POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            *admin,
        ]
    )


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


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
    form = {"schema": {"type": "object", "additionalProperties": {"type": "string"}}}
    webhook_responses = {
        "200": {
            "description": "Published to Kafka (and acknowledged by it). TwiML for messages "
            "and voice, empty otherwise.",
            "content": {
                "text/xml": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string", "maxLength": 0}},
            },
        },
        "400": _text("Malformed body, or not a webhook of this family."),
        "403": _text("Missing or invalid Twilio signature."),
        "404": _text("Unknown family."),
        "405": _text("Method other than GET or POST."),
        "413": _text("Body over the size limit."),
        "415": _text("Content type other than form data or JSON."),
        "503": _text("Kafka did not acknowledge in time: Twilio should retry."),
    }
    signature = {
        "name": "X-Twilio-Signature",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Twilio's request signature (or X-Twilio-Webhooks-Signature-Settings "
        "with SharedKey).",
    }
    family = {
        "name": "family",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(WEBHOOK_FAMILIES)},
    }
    webhook_op = {
        "parameters": [family, signature],
        "responses": webhook_responses,
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "twilio-kafka-bridge", "version": __version__},
        "paths": {
            "/webhooks/twilio/{family}": {
                "post": {
                    **webhook_op,
                    "summary": "Receive a Twilio webhook and publish it as a CloudEvent",
                    "requestBody": {
                        "content": {
                            FORM: form,
                            "application/json": {"schema": {}},
                        }
                    },
                },
                "get": {**webhook_op, "summary": "Receive a Twilio webhook sent with GET"},
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _text("alive")}}},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": _text("Prometheus text exposition format")},
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
