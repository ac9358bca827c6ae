"""The webhook endpoint: ``/webhooks/twilio/{family}`` on Starlette, and its OpenAPI paths.

Only HTTP is translated here: the body is read within its limit and the URL rebuilt exactly as
Twilio signed it (``public_url``); ``WebhookReceiver`` decides the answer.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bridge.config import WEBHOOK_FAMILIES, WebhookSettings
from bridge.http.body import BodyTooLarge, read_body
from bridge.http.openapi import text_response
from bridge.inbound.webhooks.receiver import WebhookReceiver, WebhookRequest, public_url
from bridge.observability.metrics import WEBHOOKS
from bridge.twilio.encoding import FORM

__all__ = ["webhook_openapi", "webhook_route"]


def webhook_route(receiver: WebhookReceiver, settings: WebhookSettings) -> Route:
    """The route that hands every webhook to ``receiver``."""

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

    return Route("/webhooks/twilio/{family}", webhook, methods=["GET", "POST"])


def webhook_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 path item of the webhook endpoint."""
    form = {"schema": {"type": "object", "additionalProperties": {"type": "string"}}}
    webhook_responses = {
        "200": {
            "description": "Published to Kafka (and acknowledged by it). TwiML for messages "
            "and voice (static, or a service's answer from Kafka, or the fallback, with "
            "BRIDGE_TWIML__FAMILIES), empty otherwise.",
            "content": {
                "text/xml": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string", "maxLength": 0}},
            },
        },
        "400": text_response("Malformed body, or not a webhook of this family."),
        "403": text_response("Missing or invalid Twilio signature."),
        "404": text_response("Unknown family."),
        "405": text_response("Method other than GET or POST."),
        "413": text_response("Body over the size limit."),
        "415": text_response("Content type other than form data or JSON."),
        "503": text_response("Kafka did not acknowledge in time: Twilio should retry."),
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
    return {
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
        }
    }
