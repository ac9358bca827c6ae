import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.config import SettingsError
from bridge.tooling import catalog_gen
from bridge.twilio.catalog import (
    BUILT_IN,
    AmbiguousOperationError,
    Catalog,
    Operation,
    SpecDirError,
    UnknownOperationError,
)
from tests.helpers import widgets_spec

PACKAGED = catalog_gen.DEFAULT_OUT


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def test_packaged_catalog_covers_every_spec(catalog: Catalog) -> None:
    assert len(catalog) == 1447
    assert len(list(catalog)) == 1447
    specs = catalog.specs()
    assert len(specs) == 55 and specs == sorted(specs)
    apis = catalog.apis()
    # 55 spec files, but iam_scim and verify_v3 declare no operations in 2.6.7.
    assert len(apis) == 53
    assert {"twilio_iam_scim.json", "twilio_verify_v3.json"} <= set(specs)
    assert not {"iam.scim", "verify.v3"} & set(apis)
    assert apis == sorted(apis)
    assert {"api.v2010", "verify.v2", "iam.organizations", "preview"} <= set(apis)
    # The apis 2.6.7 added to the specs of @twilio-alpha/mcp@0.7.0.
    assert {"insights.v2", "knowledge.v1", "messaging.v3", "numbers.v3", "oauth.v2"} <= set(apis)
    assert {catalog.source_of(op) for op in catalog} == {BUILT_IN}


def test_load_is_cached(catalog: Catalog) -> None:
    assert Catalog.load() is catalog


def test_file_says_it_is_generated() -> None:
    first_line = PACKAGED.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith('{"_generated":')
    assert 'Regenerate with: python -m bridge.tooling.catalog_gen"' in first_line
    doc = json.loads(PACKAGED.read_bytes())
    assert list(doc) == ["_generated", "source", "specs", "operations"]
    assert doc["source"] == ("twilio/twilio-oai 2.6.7 (d50069b44ea8cd23141385bdb6db48f16ff75bb5)")


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
    assert len(json_ops) == 51
    assert types.count("application/json") == 48
    assert types.count("application/scim+json") == 3
    assert {op.operation for op in json_ops if op.content_type == "application/scim+json"} == {
        "CreateOrganizationUser",
        "UpdateOrganizationUser",
        "PatchOrganizationUser",
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


def test_operations_record_how_twilio_authenticates_them(catalog: Catalog) -> None:
    ops = list(catalog)
    auth = {op.auth for op in ops}
    assert auth == {"basic", "oauth2", "none"}
    oauth = {op.operation for op in ops if op.auth == "oauth2"}
    assert "CreateOrganizationUser" in oauth and all(
        op.api == "iam.organizations" for op in ops if op.auth == "oauth2"
    )
    assert catalog.resolve("CreateMessage").auth == "basic"


def test_search_matches_every_word_in_any_order_best_first(catalog: Catalog) -> None:
    found = catalog.search("send message")
    assert (found[0].api, found[0].operation) == ("api.v2010", "CreateMessage")
    assert [op.operation for op in catalog.search("message SEND")] == [op.operation for op in found]
    # Every word somewhere: the api, the path and the summary count as well as the name.
    assert {op.api for op in catalog.search("verify.v2 check")} == {"verify.v2"}
    assert catalog.search("verify.v2 check")[0].operation == "CreateVerificationCheck"
    # The whole name wins over names that merely contain it.
    assert catalog.search("ListCall")[0].operation == "ListCall"
    assert catalog.search("send message zebra") == []
    assert len(catalog.search("")) == len(catalog)


# --- specs added at start-up (BRIDGE_CATALOG__SPEC_DIR) ----------------------------------------


def _write(folder: Path, name: str, doc: object) -> Path:
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_a_spec_dir_adds_an_api_and_marks_where_it_comes_from(
    catalog: Catalog, tmp_path: Path
) -> None:
    path = _write(tmp_path, "twilio_widgets_v1.json", widgets_spec())
    (tmp_path / "..data").mkdir()  # how a mounted ConfigMap looks: hidden entries are skipped
    added = Catalog.load(tmp_path)
    assert len(added) == len(catalog) + 3
    create = added.resolve("CreateWidget")
    assert (create.api, create.host) == ("widgets.v1", "https://widgets.twilio.com")
    assert added.source_of(create) == str(path)
    assert added.source_of(added.resolve("CreateMessage")) == BUILT_IN
    assert "twilio_widgets_v1.json" in added.specs() and len(added.specs()) == 56
    assert Catalog.load() is catalog  # the packaged catalog is left as it was


def test_a_file_of_the_same_name_replaces_the_built_in_spec(
    catalog: Catalog, tmp_path: Path
) -> None:
    doc = widgets_spec()
    doc["servers"] = [{"url": "https://verify.twilio.com"}]
    _write(tmp_path, "twilio_verify_v2.json", doc)
    replaced = Catalog.load(tmp_path)
    verify = [op for op in replaced if op.api == "verify.v2"]
    assert sorted(op.operation for op in verify) == ["CreateWidget", "FetchWidget", "ListWidget"]
    assert len(replaced) == len(catalog) - len([op for op in catalog if op.api == "verify.v2"]) + 3
    assert replaced.specs() == catalog.specs()
    with pytest.raises(UnknownOperationError):
        replaced.resolve("CreateVerification")


def _problem(tmp_path: Path) -> SpecDirError:
    with pytest.raises(SpecDirError) as info:
        Catalog.load(tmp_path)
    assert isinstance(info.value, SettingsError)
    assert str(info.value).startswith("invalid configuration:\n  BRIDGE_CATALOG__SPEC_DIR: ")
    assert str(info.value.file) in str(info.value)
    return info.value


def test_a_broken_spec_stops_with_the_file_and_the_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, "twilio_widgets_v1.json", '{"openapi": "3.0.1", "paths": {')
    error = _problem(tmp_path)
    assert error.file == path and error.problem.startswith("not JSON")
    _write(tmp_path, "twilio_widgets_v1.json", {"swagger": "2.0"})
    assert "not an OpenAPI 3 document" in _problem(tmp_path).problem
    doc = widgets_spec()
    doc["servers"] = [{"url": "https://widgets.example.com"}]
    _write(tmp_path, "twilio_widgets_v1.json", doc)
    assert "not https on a twilio.com host" in _problem(tmp_path).problem


def test_anything_but_json_specs_in_the_dir_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "twilio_widgets_v1.yaml", "openapi: 3.0.1")
    error = _problem(tmp_path)
    assert (error.file, error.problem) == (
        path,
        "not a .json file (the directory holds twilio-oai json specs)",
    )
    assert _problem(tmp_path / "missing").problem == "not a directory"


def test_two_files_of_one_api_are_ambiguous(tmp_path: Path) -> None:
    _write(tmp_path, "twilio_widgets_v1.json", widgets_spec())
    path = _write(tmp_path, "widgets_v1.json", widgets_spec())
    error = _problem(tmp_path)
    assert (error.file, error.problem) == (
        path,
        "api widgets.v1 is also defined by twilio_widgets_v1.json",
    )


def _renamed(operation_id: str, path: str = "/v1/Widgets/{Sid}", method: str = "get") -> Any:
    doc = widgets_spec()
    doc["paths"][path][method]["operationId"] = operation_id
    return doc


def _v2010_with_create_verification() -> Any:
    # A newer api.v2010 spec with an operation named like verify.v2's only one.
    doc = json.loads(catalog_gen.read_specs(catalog_gen.SPECS)["twilio_api_v2010.json"])
    doc["paths"]["/2010-04-01/Widgets.json"] = _renamed("CreateVerification", "/v1/Widgets")[
        "paths"
    ]["/v1/Widgets"]
    return doc


def _widgets_on_the_api_host() -> Any:
    doc = widgets_spec()
    doc["servers"] = [{"url": "https://api.twilio.com"}]
    return doc


@pytest.mark.parametrize(
    ("file_name", "doc", "problem"),
    [
        (
            "twilio_widgets_v1.json",
            lambda: _renamed("ListWidget"),
            "operationId 'ListWidget' is ambiguous: both GET /v1/Widgets and GET /v1/Widgets/{Sid}",
        ),
        (
            "twilio_widgets_v1.json",
            lambda: _renamed("CreateVerification", "/v1/Widgets", "post"),
            "operationId 'CreateVerification' would become ambiguous (verify.v2, widgets.v1): "
            "envelopes naming it without 'api' would fail",
        ),
        (
            "twilio_api_v2010.json",
            _v2010_with_create_verification,
            "operationId 'CreateVerification' would mean api.v2010's operation instead of "
            "verify.v2's for envelopes without 'api'",
        ),
        (
            # CreateMessage is in several apis; without it in api.v2010 it is ambiguous.
            "twilio_api_v2010.json",
            _widgets_on_the_api_host,
            "operationId 'CreateMessage' would become ambiguous (assistants.v1, chat.v1, "
            "chat.v2, ip_messaging.v1, ip_messaging.v2): envelopes naming it without 'api' "
            "would fail",
        ),
    ],
    ids=["twice-in-one-api", "ambiguous", "switches-api", "v2010-replaced-without-it"],
)
def test_an_operation_id_envelopes_could_no_longer_address_is_refused(
    tmp_path: Path, file_name: str, doc: Callable[[], Any], problem: str
) -> None:
    path = _write(tmp_path, file_name, doc())
    error = _problem(tmp_path)
    assert (error.file, error.problem) == (path, problem)


def test_a_name_may_move_when_its_spec_is_replaced(tmp_path: Path) -> None:
    doc = widgets_spec()
    doc["paths"]["/v1/Widgets"]["post"]["operationId"] = "CreateVerification"
    _write(tmp_path, "twilio_widgets_v1.json", doc)
    _write(tmp_path, "twilio_verify_v2.json", {"openapi": "3.0.1", "paths": {}})
    assert Catalog.load(tmp_path).resolve("CreateVerification").api == "widgets.v1"


def test_names_that_stay_resolvable_are_fine(catalog: Catalog, tmp_path: Path) -> None:
    doc = widgets_spec()
    # api.v2010 wins over other apis, and a name in several apis needed 'api' already.
    doc["paths"]["/v1/Widgets"]["post"]["operationId"] = "CreateMessage"
    doc["paths"]["/v1/Widgets"]["get"]["operationId"] = "FetchSafelist"
    added = Catalog.load(_write(tmp_path, "twilio_widgets_v1.json", doc).parent)
    assert added.resolve("CreateMessage").api == "api.v2010"
    assert added.resolve("CreateMessage", "widgets.v1").method == "POST"
    with pytest.raises(AmbiguousOperationError):
        added.resolve("FetchSafelist")
