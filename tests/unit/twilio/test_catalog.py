import json
from pathlib import Path

import pytest

from bridge.tooling import catalog_gen
from bridge.tooling.local.twilio_spec import ensure_spec
from bridge.twilio.catalog import (
    AmbiguousOperationError,
    Catalog,
    Operation,
    UnknownOperationError,
)

PACKAGED = catalog_gen.DEFAULT_OUT


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def test_packaged_catalog_covers_every_spec(catalog: Catalog) -> None:
    assert len(catalog) == 1407
    assert len(list(catalog)) == 1407
    apis = catalog.apis()
    # 50 spec files, but iam_v2 and verify_v3 declare no operations in 0.7.0.
    assert len(apis) == 48
    assert not {"iam.v2", "verify.v3"} & set(apis)
    assert apis == sorted(apis)
    assert {"api.v2010", "verify.v2", "iam.organizations", "preview"} <= set(apis)


def test_load_is_cached(catalog: Catalog) -> None:
    assert Catalog.load() is catalog


def test_file_says_it_is_generated() -> None:
    first_line = PACKAGED.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith('{"_generated":')
    assert "python -m bridge.tooling.catalog_gen SPEC_DIR" in first_line
    doc = json.loads(PACKAGED.read_bytes())
    assert list(doc) == ["_generated", "source", "operations"]
    assert doc["source"] == "@twilio-alpha/mcp@0.7.0"


def test_create_message(catalog: Catalog) -> None:
    op = catalog.resolve("CreateMessage")
    assert (op.api, op.method, op.domain) == ("api.v2010", "POST", "api")
    assert op.host == "https://api.twilio.com"
    assert op.path == "/2010-04-01/Accounts/{AccountSid}/Messages.json"
    assert op.content_type == "application/x-www-form-urlencoded"
    assert not op.is_json
    assert [p.name for p in op.params_in("path")] == ["AccountSid"]
    assert [p.name for p in op.params_in("body") if p.required] == ["To"]
    media = op.param("MediaUrl", "body")
    assert media is not None
    assert (media.type, media.items, media.required) == ("array", "string", False)
    account = op.param("AccountSid")
    assert account is not None and account.pattern == "^AC[0-9a-fA-F]{32}$"
    assert op.param("MediaUrl", "query") is None


@pytest.mark.parametrize(
    ("name", "api", "method"),
    [
        ("ListCall", "api.v2010", "GET"),
        ("FetchRecording", "api.v2010", "GET"),
        ("FetchMedia", "api.v2010", "GET"),
        ("CreateParticipant", "api.v2010", "POST"),
        ("ListCallEvent", "api.v2010", "GET"),
        ("FetchBalance", "api.v2010", "GET"),
    ],
)
def test_common_operations_resolve(catalog: Catalog, name: str, api: str, method: str) -> None:
    op = catalog.resolve(name)
    assert (op.operation, op.api, op.method) == (name, api, method)
    assert op.path.startswith("/2010-04-01/Accounts/{AccountSid}/")


def test_explicit_api_picks_the_other_spec(catalog: Catalog) -> None:
    op = catalog.resolve("FetchRecording", api="video.v1")
    assert (op.api, op.domain, op.path) == ("video.v1", "video", "/v1/Recordings/{Sid}")
    assert catalog.resolve("CreateParticipant", "proxy.v1").host == "https://proxy.twilio.com"


def test_ambiguous_name_outside_v2010_needs_an_api(catalog: Catalog) -> None:
    with pytest.raises(AmbiguousOperationError) as info:
        catalog.resolve("FetchSafelist")
    assert info.value.name == "FetchSafelist"
    assert info.value.candidates == ["accounts.v1", "verify.v2"]
    assert "accounts.v1, verify.v2" in str(info.value)
    assert isinstance(info.value, LookupError)
    assert catalog.resolve("FetchSafelist", "verify.v2").api == "verify.v2"


def test_unique_name_outside_v2010_resolves_without_api(catalog: Catalog) -> None:
    assert catalog.resolve("CreateVerification").api == "verify.v2"


def test_unknown_name_suggests(catalog: Catalog) -> None:
    with pytest.raises(UnknownOperationError) as info:
        catalog.resolve("CreateMesage")
    err = info.value
    assert (err.name, err.api) == ("CreateMesage", None)
    assert err.suggestions[0] == "CreateMessage"
    assert len(err.suggestions) <= 5
    assert str(err).startswith("unknown operation 'CreateMesage'; did you mean: CreateMessage")
    assert isinstance(err, LookupError)


def test_name_in_wrong_api_is_unknown(catalog: Catalog) -> None:
    with pytest.raises(UnknownOperationError) as info:
        catalog.resolve("ListCall", api="verify.v2")
    assert info.value.api == "verify.v2"
    assert "in api 'verify.v2'" in str(info.value)
    assert "ListCall" not in info.value.suggestions


def test_nonsense_has_no_suggestions(catalog: Catalog) -> None:
    with pytest.raises(UnknownOperationError) as info:
        catalog.resolve("zzzzqqqq")
    assert info.value.suggestions == []
    assert "did you mean" not in str(info.value)


def test_suggest_ignores_case_and_honours_api(catalog: Catalog) -> None:
    assert catalog.suggest("createmessage")[0] == "CreateMessage"
    video = catalog.suggest("FetchRecordng", api="video.v1")
    assert video[0] == "FetchRecording" and len(video) == 5
    assert all(catalog.resolve(name, "video.v1") for name in video)
    assert catalog.suggest("ListCal", api="api.v2010")[:2] == ["ListCall", "ListCallEvent"]


def test_search(catalog: Catalog) -> None:
    by_name = {op.operation for op in catalog.search("balance")}
    assert "FetchBalance" in by_name
    assert {op.api for op in catalog.search("VERIFY.V2")} == {"verify.v2"}
    assert any(op.operation == "CreateMessage" for op in catalog.search("/messages.json"))
    assert catalog.search("no such thing anywhere") == []


def test_json_bodied_operations(catalog: Catalog) -> None:
    json_ops = [op for op in catalog if op.is_json]
    types = sorted(op.content_type or "" for op in json_ops)
    assert len(json_ops) == 34
    assert types.count("application/json") == 32
    assert types.count("application/scim+json") == 2
    assert {op.operation for op in json_ops if op.content_type == "application/scim+json"} == {
        "CreateOrganizationUser",
        "UpdateOrganizationUser",
    }
    content = catalog.resolve("CreateContent", "content.v1")
    assert content.is_json and all(p.style is None for p in content.params_in("body"))
    form_or_none = {op.content_type for op in catalog if not op.is_json}
    assert form_or_none == {None, "application/x-www-form-urlencoded"}


def test_encoding_styles(catalog: Catalog) -> None:
    add_ons = catalog.resolve("FetchPhoneNumber", "lookups.v1").param("AddOnsData")
    assert add_ons is not None
    assert (add_ons.location, add_ons.style, add_ons.prefix) == ("query", "flatten", "AddOns")
    data = catalog.resolve("CreateDocument", "sync.v1").param("Data")
    assert data is not None and (data.type, data.style) == ("object", "json")
    channel = catalog.resolve("CreateVerification").param("ChannelConfiguration")
    assert channel is not None and (channel.type, channel.style) == ("object", "json")
    fields = catalog.resolve("CreateChallenge", "verify.v2").param("Details.Fields")
    assert fields is not None and (fields.type, fields.items, fields.style) == (
        "array",
        "object",
        "json",
    )
    dotted = catalog.resolve("UpdateService", "chat.v2").param("Notifications.NewMessage.Enabled")
    assert dotted is not None and (dotted.type, dotted.style) == ("boolean", None)


def test_enums_and_header_params(catalog: Catalog) -> None:
    codecs = catalog.resolve("CreateRoom", "video.v1").param("VideoCodecs")
    assert codecs is not None and codecs.items == "string"
    assert codecs.enum is not None and "VP8" in codecs.enum
    headers = [p for op in catalog for p in op.params_in("header")]
    assert headers and all(p.style is None for p in headers)


def test_every_operation_is_well_formed(catalog: Catalog) -> None:
    kinds = {"string", "integer", "number", "boolean", "array", "object"}
    for op in catalog:
        assert isinstance(op, Operation)
        assert op.method in {"GET", "POST", "PUT", "PATCH", "DELETE"}
        assert op.host.startswith("https://") and op.host.endswith(".twilio.com")
        assert len(op.summary) <= 120
        for name in (p.name for p in op.params_in("path")):
            assert "{" + name + "}" in op.path
        for p in op.params:
            assert p.type in kinds
            assert (p.items is not None) == (p.type == "array")
            assert (p.prefix is not None) == (p.style == "flatten")


@pytest.mark.parametrize(
    ("file_name", "api"),
    [
        ("twilio_api_v2010.json", "api.v2010"),
        ("twilio_verify_v2.json", "verify.v2"),
        ("twilio_iam_organizations.json", "iam.organizations"),
        ("twilio_ip_messaging_v2.json", "ip_messaging.v2"),
        ("twilio_preview.json", "preview"),
    ],
)
def test_api_name(file_name: str, api: str) -> None:
    assert catalog_gen.api_name(file_name) == api


def test_generator_on_a_tiny_spec(tmp_path: Path) -> None:
    spec = {
        "servers": [{"url": "https://demo.twilio.com/"}],
        "components": {
            "schemas": {"color": {"type": "string", "enum": ["red", "blue"]}},
            "parameters": {"sid": {"name": "Sid", "in": "path", "schema": {"type": "string"}}},
        },
        "paths": {
            "/v1/Things/{Sid}": {
                "post": {
                    "operationId": "UpdateThing",
                    "description": "Update a thing\nsecond line",
                    "parameters": [{"$ref": "#/components/parameters/sid"}],
                    "requestBody": {
                        "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {
                                    "required": ["Color"],
                                    "properties": {
                                        "Color": {"$ref": "#/components/schemas/color"},
                                        "Data": {"description": "any json"},
                                    },
                                }
                            }
                        }
                    },
                },
                "delete": {"operationId": "DeleteThing", "summary": "x" * 300},
            }
        },
    }
    (tmp_path / "twilio_demo_v1.json").write_text(json.dumps(spec))
    (tmp_path / "other.json").write_text("not read")
    out = tmp_path / "out" / "catalog.json"
    assert catalog_gen.main([str(tmp_path), str(out)]) == 0
    built = Catalog.from_json(out.read_bytes())
    update = built.resolve("UpdateThing")
    assert (update.api, update.host, update.summary) == (
        "demo.v1",
        "https://demo.twilio.com",
        "Update a thing",
    )
    sid, color, data = update.params
    assert (sid.name, sid.location, sid.required) == ("Sid", "path", True)
    assert (color.required, color.enum, color.style) == (True, ("red", "blue"), None)
    assert (data.type, data.style, data.required) == ("object", "json", False)
    delete = built.resolve("DeleteThing")
    assert delete.content_type is None and len(delete.summary) == 120


def test_generator_refuses_an_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        catalog_gen.generate(tmp_path)
    assert catalog_gen.main([]) == 2


def test_regenerating_matches_the_packaged_file(tmp_path: Path) -> None:
    # Fetches the official spec (npm pack, cached) on first use, like the demo does.
    out = tmp_path / "catalog.json"
    catalog_gen.write(ensure_spec(), out)
    assert out.read_bytes() == PACKAGED.read_bytes()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"servers": [{"url": "https://a.twilio.com"}, {"url": "https://b.twilio.com"}]},
            "exactly one server",
        ),
        (
            {
                "servers": [{"url": "https://a.twilio.com"}],
                "paths": {
                    "/x": {"get": {"operationId": "X", "parameters": [{"$ref": "o.json#/p"}]}}
                },
            },
            "external",
        ),
    ],
)
def test_generator_rejects_specs_it_cannot_represent(
    tmp_path: Path, spec: dict[str, object], message: str
) -> None:
    spec.setdefault("paths", {"/x": {"get": {"operationId": "X"}}})
    (tmp_path / "twilio_a_v1.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=message):
        catalog_gen.generate(tmp_path)


def test_operations_record_how_twilio_authenticates_them(catalog: Catalog) -> None:
    ops = list(catalog)
    auth = {op.auth for op in ops}
    assert auth == {"basic", "oauth2", "none"}
    oauth = {op.operation for op in ops if op.auth == "oauth2"}
    assert "CreateOrganizationUser" in oauth and all(
        op.api == "iam.organizations" for op in ops if op.auth == "oauth2"
    )
    assert catalog.resolve("CreateMessage").auth == "basic"
