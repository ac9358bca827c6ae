"""Reading one twilio-oai document into catalog entries, and refusing what cannot be served."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge.twilio.openapi import SpecError, api_name, operations
from tests.helpers import widgets_spec


@pytest.mark.parametrize(
    ("file_name", "api"),
    [
        ("twilio_api_v2010.json", "api.v2010"),
        ("twilio_verify_v2.json", "verify.v2"),
        ("twilio_iam_organizations.json", "iam.organizations"),
        ("twilio_ip_messaging_v2.json", "ip_messaging.v2"),
        ("twilio_preview.json", "preview"),
        ("widgets_v1.json", "widgets.v1"),
    ],
)
def test_api_name(file_name: str, api: str) -> None:
    assert api_name(file_name) == api


def _by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {op["operation"]: op for op in operations("widgets.v1", doc)}


def test_a_made_up_api_is_read_like_twilios() -> None:
    ops = _by_name(widgets_spec())
    assert sorted(ops) == ["CreateWidget", "FetchWidget", "ListWidget"]
    create = ops["CreateWidget"]
    assert (create["method"], create["host"], create["path"], create["auth"]) == (
        "POST",
        "https://widgets.twilio.com",
        "/v1/Widgets",
        "basic",
    )
    assert create["content_type"] == "application/x-www-form-urlencoded"
    params = {p["name"]: p for p in create["params"]}
    assert [p["name"] for p in create["params"]] == [
        "X-Twilio-Webhook-Enabled",
        "Attributes",
        "Colors",
        "Enabled",
        "Name",
    ]
    assert params["X-Twilio-Webhook-Enabled"]["in"] == "header"
    assert "style" not in params["X-Twilio-Webhook-Enabled"]
    assert (params["Colors"]["items"], params["Colors"]["enum"]) == ("string", ["red", "blue"])
    assert (params["Attributes"]["type"], params["Attributes"]["style"]) == ("object", "json")
    assert params["Attributes"]["description"] == "any JSON"
    assert params["Name"]["required"] and not params["Enabled"]["required"]


def test_openapi_3_1_type_lists_keep_the_type_that_is_not_null() -> None:
    doc = widgets_spec()
    doc["openapi"] = "3.1.0"
    properties = doc["paths"]["/v1/Widgets"]["post"]["requestBody"]["content"][
        "application/x-www-form-urlencoded"
    ]["schema"]["properties"]
    properties["Enabled"] = {"type": ["boolean", "null"]}
    properties["Colors"] = {"type": ["array", "null"], "items": {"type": ["string", "null"]}}
    params = {p["name"]: p for p in _by_name(doc)["CreateWidget"]["params"]}
    assert params["Enabled"]["type"] == "boolean"
    assert (params["Colors"]["type"], params["Colors"]["items"]) == ("array", "string")


def test_a_one_of_body_offers_every_alternatives_properties_none_required() -> None:
    doc = widgets_spec()
    media = doc["paths"]["/v1/Widgets"]["post"]["requestBody"]["content"]
    media["application/json"] = {
        "schema": {
            "oneOf": [
                {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}},
                {"type": "object", "required": ["b"], "properties": {"b": {"type": "integer"}}},
            ]
        }
    }
    del media["application/x-www-form-urlencoded"]
    create = _by_name(doc)["CreateWidget"]
    body = [(p["name"], p["type"], p["required"]) for p in create["params"] if p["in"] == "body"]
    assert body == [("a", "string", False), ("b", "integer", False)]
    assert create["content_type"] == "application/json"


@pytest.mark.parametrize(
    ("scheme", "auth"),
    [
        ({"type": "http", "scheme": "basic"}, "basic"),
        ({"type": "http", "scheme": "bearer"}, "oauth2"),
        ({"type": "oauth2", "flows": {}}, "oauth2"),
    ],
)
def test_security_schemes(scheme: dict[str, Any], auth: str) -> None:
    doc = widgets_spec()
    doc["components"]["securitySchemes"]["accountSid_authToken"] = scheme
    assert {op["auth"] for op in operations("w.v1", doc)} == {auth}
    doc["security"] = []
    assert {op["auth"] for op in operations("w.v1", doc)} == {"none"}


def _broken(change: str) -> dict[str, Any]:
    doc = copy.deepcopy(widgets_spec())
    fetch = doc["paths"]["/v1/Widgets/{Sid}"]["get"]
    if change == "openapi":
        del doc["openapi"]
    elif change == "host":
        doc["servers"] = [{"url": "https://widgets.example.com"}]
    elif change == "http":
        doc["servers"] = [{"url": "http://widgets.twilio.com"}]
    elif change == "servers":
        doc["servers"].append({"url": "https://other.twilio.com"})
    elif change == "ref":
        fetch["parameters"] = [{"$ref": "other.json#/p"}]
    elif change == "dangling":
        fetch["parameters"] = [{"$ref": "#/components/parameters/none"}]
    elif change == "cookie":
        fetch["parameters"][0]["in"] = "cookie"
    elif change == "operationId":
        del fetch["operationId"]
    elif change == "apiKey":
        doc["components"]["securitySchemes"]["accountSid_authToken"] = {"type": "apiKey"}
    elif change == "xml":
        fetch["requestBody"] = {"content": {"application/xml": {"schema": {}}}}
    elif change == "malformed":
        fetch["parameters"] = [{"in": "path"}]
    return doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("openapi", "not an OpenAPI 3 document"),
        ("host", "https://widgets.example.com is not https on a twilio.com host"),
        ("http", "http://widgets.twilio.com is not https on a twilio.com host"),
        ("servers", "GET /v1/Widgets: expected exactly one server"),
        ("ref", "external $ref not supported: other.json#/p"),
        ("dangling", "$ref #/components/parameters/none points at nothing"),
        ("cookie", "'in' 'cookie' not supported"),
        ("operationId", "GET /v1/Widgets/{Sid}: no operationId"),
        ("apiKey", "security scheme 'accountSid_authToken' (apiKey) not supported"),
        ("xml", "request body of type application/xml not supported"),
        ("malformed", "GET /v1/Widgets/{Sid}: a parameter without a name"),
    ],
)
def test_what_cannot_be_served_is_refused_with_the_reason(change: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        list(operations("widgets.v1", _broken(change)))
    assert message in str(info.value)


@pytest.mark.parametrize("doc", [[], "x", {"openapi": "3.0.1", "paths": []}])
def test_a_document_that_is_not_an_object_is_refused(doc: Any) -> None:
    with pytest.raises(SpecError):
        list(operations("w.v1", doc))
