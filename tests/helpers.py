"""What many tests share: the project's root, a Twilio account SID, a stored instance, and a
made-up Twilio API spec (for specs added at run time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.instances.model import Instance

__all__ = [
    "ACCOUNT",
    "INSTANCE_ACCOUNT",
    "ROOT",
    "SCHEMAS",
    "WIDGET_SID",
    "stored_instance",
    "widgets_spec",
]

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
# Test account SIDs: any 32 hex digits will do; an instance's differs from the settings' one.
ACCOUNT = "AC" + "0" * 32
INSTANCE_ACCOUNT = "AC" + "c" * 32
WIDGET_SID = "WG" + "0" * 32


def stored_instance(
    name: str,
    account_sid: str,
    auth_token: str,
    *,
    revision: int = 1,
    tags: tuple[str, ...] = (),
    **configuration: Any,
) -> Instance:
    """Instance ``name`` of ``account_sid`` with ``auth_token``, plus ``configuration``."""
    return Instance.model_validate(
        {
            "name": name,
            "configuration": {
                "account_sid": account_sid,
                "auth_token": auth_token,
                **configuration,
            },
            "tags": list(tags),
            "revision": revision,
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-02T00:00:00.000Z",
        }
    )


def _json_response(status: str, example: dict[str, Any]) -> dict[str, Any]:
    properties = {key: {"type": "string"} for key in example}
    schema = {"type": "object", "properties": properties}
    content = {"application/json": {"schema": schema, "example": example}}
    return {status: {"description": "OK", "content": content}}


def widgets_spec() -> dict[str, Any]:
    """A made-up Twilio API, ``twilio_widgets_v1.json`` style: its own host, and a list, a
    boolean, an object and a header parameter, as twilio-oai writes them."""
    widget = {"sid": WIDGET_SID, "name": "w"}
    body_schema = {
        "type": "object",
        "required": ["Name"],
        "properties": {
            "Name": {"type": "string"},
            "Colors": {"type": "array", "items": {"type": "string", "enum": ["red", "blue"]}},
            "Enabled": {"type": "boolean"},
            "Attributes": {"description": "any JSON"},
        },
    }
    webhooks = {"name": "X-Twilio-Webhook-Enabled", "in": "header", "schema": {"type": "string"}}
    return {
        "openapi": "3.0.1",
        "info": {"title": "Widgets", "version": "1.0.0"},
        "servers": [{"url": "https://widgets.twilio.com"}],
        "security": [{"accountSid_authToken": []}],
        "components": {
            "securitySchemes": {"accountSid_authToken": {"type": "http", "scheme": "basic"}}
        },
        "paths": {
            "/v1/Widgets": {
                "post": {
                    "operationId": "CreateWidget",
                    "summary": "Make a widget",
                    "parameters": [webhooks],
                    "requestBody": {
                        "content": {"application/x-www-form-urlencoded": {"schema": body_schema}}
                    },
                    "responses": _json_response("201", widget),
                },
                "get": {
                    "operationId": "ListWidget",
                    "parameters": [
                        {"name": "Enabled", "in": "query", "schema": {"type": "boolean"}},
                        {
                            "name": "Color",
                            "in": "query",
                            "schema": {"type": "array", "items": {"type": "string"}},
                        },
                    ],
                    "responses": _json_response("200", {"widgets": "[]"}),
                },
            },
            "/v1/Widgets/{Sid}": {
                "get": {
                    "operationId": "FetchWidget",
                    "parameters": [
                        {
                            "name": "Sid",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^WG[0-9a-fA-F]{32}$"},
                        }
                    ],
                    "responses": _json_response("200", widget),
                }
            },
        },
    }
