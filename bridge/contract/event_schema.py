"""JSON Schemas (draft 2020-12) of the ``data`` of each event family, from the event mapping.

A webhook family's data is the webhook's parameters (``events.form_data``): what the event
mapping needs is required (the account, the resource SID, the status the type is named after,
each also under its older alias), the rest is described but left open. Event Streams data is
Twilio's own, named by the event's ``dataschema`` attribute. Pure: builds dicts.
"""

from __future__ import annotations

from typing import Any

from bridge.contract.events import ALIASES, EVENT_STREAMS, FAMILIES

__all__ = ["event_data_schema", "event_families", "type_parameter"]

# A parameter the mapping reads: a non-blank string, or a list whose first item is one (a
# repeated form parameter); ``events._text`` reads exactly that.
_NON_BLANK = {
    "description": "A non-blank string, or a list (a repeated parameter) whose first item is one.",
    "anyOf": [
        {"type": "string", "pattern": "\\S"},
        {"type": "array", "minItems": 1, "prefixItems": [{"type": "string", "pattern": "\\S"}]},
    ],
}
_OTHERS = (
    "Every other parameter Twilio sent. Twilio sends these webhooks form-encoded (or as the "
    "query string of a GET), so a value is a string, or a list of strings in order when the "
    "parameter was repeated; a webhook POSTed as a JSON object keeps its JSON values."
)


def event_families() -> tuple[str, ...]:
    """Every family with its own topic: the webhook families, then Event Streams."""
    return (*FAMILIES, EVENT_STREAMS)


def type_parameter(family: str) -> str | None:
    """The parameter a family's event type is named after (``MessageStatus``...), if any."""
    template = FAMILIES[family][1]
    return template[template.index("{") + 1 : -1] if "{" in template else None


def event_data_schema(family: str) -> dict[str, Any]:
    """The schema of the event ``data`` (the Kafka value) of ``family``."""
    if family == EVENT_STREAMS:
        return {
            "description": "The data of a Twilio Event Streams event, as Twilio sent it (any "
            "JSON value, null when the event had none). Its schema is the one the "
            "event's dataschema attribute (Kafka header ce_dataschema) names.",
        }
    sid, _ = FAMILIES[family]
    needed = ["AccountSid", sid]
    status = type_parameter(family)
    if status is not None:
        needed.append(status)
    properties: dict[str, Any] = {}
    required: list[str] = []
    either: list[dict[str, Any]] = []
    for name in needed:
        what = {"AccountSid": "The account", sid: "The resource SID (the Kafka key)"}.get(
            name, "The status the event type is named after"
        )
        alias = ALIASES.get(name)
        if alias is None:
            properties[name] = {"description": f"{what}.", "$ref": "#/$defs/NonBlank"}
            required.append(name)
            continue
        # The mapping reads the alias when the name is missing or blank.
        properties[name] = {"description": f"{what}; or {alias}."}
        properties[alias] = {"description": f"Older name of {name}."}
        either.append(
            {
                "anyOf": [
                    {"required": [n], "properties": {n: {"$ref": "#/$defs/NonBlank"}}}
                    for n in (name, alias)
                ]
            }
        )
    schema: dict[str, Any] = {
        "description": f"The parameters of a '{family}' webhook, as a JSON object (a polled "
        "resource is written as the same parameters, as strings).",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": {"description": _OTHERS},
        "$defs": {"NonBlank": _NON_BLANK},
    }
    if either:
        schema["allOf"] = either
    return schema
