"""Request building: catalog resolution, validation, encoding, host rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from pydantic import SecretStr

from bridge.config import Credential, TwilioSettings
from bridge.contract.envelopes import AdvancedRequest, BasicRequest
from bridge.contract.errors import RequestInvalid, UnknownOperation
from bridge.instances.accounts import account_of
from bridge.twilio.accounts import Account, Accounts, basic_auth_header
from bridge.twilio.calls import CallBuilder, TwilioCall, origin_for, path_names, url_template
from bridge.twilio.catalog import Catalog, Operation, Param
from bridge.twilio.headers import FORBIDDEN_REQUEST_HEADERS
from tests.helpers import ACCOUNT, INSTANCE_ACCOUNT, stored_instance

OTHER_ACCOUNT = "ACfedcba9876543210fedcba9876543210"
FORM = "application/x-www-form-urlencoded"
CREDENTIALS = {
    "default": Credential(account_sid=ACCOUNT, auth_token=SecretStr("default-token")),
    "other": Credential(account_sid=OTHER_ACCOUNT, auth_token=SecretStr("other-token")),
}
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture
def builder(catalog: Catalog) -> CallBuilder:
    return CallBuilder(catalog, Accounts(CREDENTIALS), TwilioSettings())


def basic(**fields: Any) -> BasicRequest:
    """A basic envelope validated exactly as one read from Kafka."""
    return BasicRequest.model_validate({"id": "req-1", "mode": "basic", **fields})


def advanced(**fields: Any) -> AdvancedRequest:
    return AdvancedRequest.model_validate({"id": "req-1", "mode": "advanced", **fields})


def form(call: TwilioCall) -> list[tuple[str, str]]:
    assert call.content is not None
    return parse_qsl(call.content.decode(), keep_blank_values=True, strict_parsing=True)


def query(call: TwilioCall) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(call.url).query, keep_blank_values=True, strict_parsing=True)


def header(call: TwilioCall, name: str) -> list[str]:
    return [v for k, v in call.headers if k.lower() == name]


def invalid_of(builder: CallBuilder, request: BasicRequest | AdvancedRequest) -> RequestInvalid:
    with pytest.raises(RequestInvalid) as info:
        builder.build(request)
    assert info.value.kind == "validation"
    return info.value


# --- basic mode: resolution and the call as a whole -------------------------------------------


def test_create_message_becomes_a_form_post_on_the_api_host(builder: CallBuilder) -> None:
    call = builder.build(
        basic(
            operation="CreateMessage",
            body={
                "From": "+14155552671",
                "To": "+919876543210",
                "Body": "Your order has shipped",
                "MediaUrl": ["https://demo.twilio.com/owl.png", "https://demo.twilio.com/2.png"],
            },
        )
    )
    assert call.method == "POST"
    assert call.path == MESSAGES
    assert call.url == "https://api.twilio.com" + MESSAGES
    assert (call.api, call.operation, call.account.name) == (
        "api.v2010",
        "CreateMessage",
        "default",
    )
    assert call.headers == (("content-type", FORM),)
    assert call.warnings == ()
    assert form(call) == [
        ("From", "+14155552671"),
        ("To", "+919876543210"),
        ("Body", "Your order has shipped"),
        ("MediaUrl", "https://demo.twilio.com/owl.png"),
        ("MediaUrl", "https://demo.twilio.com/2.png"),
    ]
    # '+' must be percent-encoded, or Twilio reads it as a space.
    assert call.content is not None
    assert b"From=%2B14155552671" in call.content


def test_account_sid_defaults_to_the_credentials_account(builder: CallBuilder) -> None:
    call = builder.build(basic(operation="CreateMessage", body={"To": "+1"}, credential="other"))
    assert call.path == f"/2010-04-01/Accounts/{OTHER_ACCOUNT}/Messages.json"
    assert call.account.name == "other"


def test_explicit_account_sid_wins_over_the_credential(builder: CallBuilder) -> None:
    call = builder.build(
        basic(operation="CreateMessage", params={"AccountSid": OTHER_ACCOUNT}, body={"To": "+1"})
    )
    assert call.path == f"/2010-04-01/Accounts/{OTHER_ACCOUNT}/Messages.json"
    assert call.account.name == "default"
    assert call.warnings == ()


@pytest.mark.parametrize(
    ("sid", "encoded"),
    [
        ("SM123", "SM123"),
        ("MM/../../Calls", "MM%2F..%2F..%2FCalls"),
        ("a b?c=d#e", "a%20b%3Fc%3Dd%23e"),
        ("+1&x", "%2B1%26x"),
    ],
)
def test_path_params_are_quoted_as_one_segment(
    builder: CallBuilder, sid: str, encoded: str
) -> None:
    call = builder.build(basic(operation="FetchMessage", params={"Sid": sid}))
    assert call.path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{encoded}.json"
    assert call.method == "GET" and call.content is None
    assert call.headers == ()


def test_integer_path_params_are_accepted(builder: CallBuilder) -> None:
    call = builder.build(basic(operation="FetchMessage", params={"Sid": 42}))
    assert call.path.endswith("/Messages/42.json")


def test_query_is_encoded_and_appended(builder: CallBuilder) -> None:
    call = builder.build(
        basic(
            operation="ListMessage",
            query={"To": "+1 415", "DateSent>": "2024-01-01", "PageSize": 20, "From": None},
        )
    )
    assert call.path == MESSAGES + "?To=%2B1+415&DateSent%3E=2024-01-01&PageSize=20"
    assert query(call) == [("To", "+1 415"), ("DateSent>", "2024-01-01"), ("PageSize", "20")]
    assert call.content is None and call.headers == ()
    assert call.warnings == ()


def test_form_body_scalars_follow_twilios_encoding(builder: CallBuilder) -> None:
    call = builder.build(
        basic(
            operation="CreateMessage",
            body={
                "To": "+1",
                "ForceDelivery": False,
                "SendAsMms": True,
                "MaxPrice": 0.00001,
                "ValidityPeriod": 14400,
                "Attempt": 2.0,
                "StatusCallback": None,
            },
        )
    )
    assert form(call) == [
        ("To", "+1"),
        ("ForceDelivery", "false"),
        ("SendAsMms", "true"),
        ("MaxPrice", "0.00001"),
        ("ValidityPeriod", "14400"),
        ("Attempt", "2"),
    ]


def test_form_body_lists_are_repeated_keys(builder: CallBuilder) -> None:
    call = builder.build(
        basic(
            operation="CreateCall",
            body={
                "To": "+1",
                "From": "+2",
                "StatusCallbackEvent": ["initiated", "ringing answered"],
                "Record": True,
            },
        )
    )
    assert form(call) == [
        ("To", "+1"),
        ("From", "+2"),
        ("StatusCallbackEvent", "initiated"),
        ("StatusCallbackEvent", "ringing answered"),
        ("Record", "true"),
    ]


def test_form_body_objects_are_json_strings(builder: CallBuilder) -> None:
    config = {"template_id": "HX1", "substitutions": {"name": "Ann", "n": 1, "ok": True}}
    call = builder.build(
        basic(
            operation="CreateVerification",
            params={"ServiceSid": "VA1"},
            body={"To": "+1", "Channel": "sms", "ChannelConfiguration": config},
        )
    )
    pairs = form(call)
    assert [name for name, _ in pairs] == ["To", "Channel", "ChannelConfiguration"]
    assert json.loads(dict(pairs)["ChannelConfiguration"]) == config


def test_form_body_list_of_objects_is_repeated_json_strings(builder: CallBuilder) -> None:
    participants = [{"Identifier": "+1"}, {"Identifier": "+2", "FriendlyName": "B"}]
    call = builder.build(
        basic(
            operation="CreateSession",
            api="proxy.v1",
            params={"ServiceSid": "KS1"},
            body={"Participants": participants},
        )
    )
    pairs = form(call)
    assert [name for name, _ in pairs] == ["Participants", "Participants"]
    assert [json.loads(value) for _, value in pairs] == participants


def test_fetch_phone_number_flattens_add_ons_data_in_the_query(builder: CallBuilder) -> None:
    call = builder.build(
        basic(
            operation="FetchPhoneNumber",
            api="lookups.v1",
            params={"PhoneNumber": "+14155552671"},
            query={
                "AddOns": ["payfone_tcpa_compliance"],
                "AddOnsData": {"payfone_tcpa_compliance": {"RightPartyContactedDate": "20160101"}},
                "Type": ["carrier", "caller-name"],
            },
        )
    )
    assert call.url.startswith("https://lookups.twilio.com/v1/PhoneNumbers/%2B14155552671?")
    assert query(call) == [
        ("AddOns", "payfone_tcpa_compliance"),
        ("AddOns.payfone_tcpa_compliance.RightPartyContactedDate", "20160101"),
        ("Type", "carrier"),
        ("Type", "caller-name"),
    ]
    assert "AddOnsData" not in call.url
    assert call.method == "GET" and call.content is None


def test_json_operation_sends_json_with_its_content_type(builder: CallBuilder) -> None:
    body = {
        "friendly_name": "owl",
        "language": "en",
        "types": {"twilio/text": {"body": "Hi {{1}}"}},
        "variables": {"1": "name"},
    }
    call = builder.build(basic(operation="CreateContent", api="content.v1", body=body))
    assert call.url == "https://content.twilio.com/v1/Content"
    assert call.method == "POST"
    assert header(call, "content-type") == ["application/json"]
    assert call.content is not None
    assert json.loads(call.content) == body


def test_json_body_keeps_json_types(builder: CallBuilder) -> None:
    body = {"name": "t", "type": "WEB", "enabled": False, "meta": {"n": 1.5, "l": [1, 2]}}
    call = builder.build(basic(operation="CreateTool", api="assistants.v1", body=body))
    assert call.content is not None
    sent = json.loads(call.content)
    assert sent == body
    assert sent["enabled"] is False  # not the form string "false"


def _dummy(op: Operation, location: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "string": "x",
        "integer": 1,
        "number": 1.5,
        "boolean": True,
        "array": ["x"],
        "object": {"k": "v"},
    }
    return {p.name: values[p.type] for p in op.params_in(location) if p.required}


def _json_operations() -> list[Operation]:
    return [op for op in Catalog.load() if op.is_json and op.auth != "oauth2"]


@pytest.mark.parametrize("op", _json_operations(), ids=lambda op: f"{op.api}:{op.operation}")
def test_every_json_operation_is_sent_as_json(builder: CallBuilder, op: Operation) -> None:
    body = _dummy(op, "body") or {"note": "anything"}
    call = builder.build(
        basic(
            operation=op.operation,
            api=op.api,
            params=_dummy(op, "path"),
            query=_dummy(op, "query"),
            body=body,
        )
    )
    assert op.content_type is not None
    assert header(call, "content-type") == [op.content_type]
    assert call.content is not None
    assert json.loads(call.content) == body
    assert call.url.startswith(op.host + "/")


def test_oauth2_operation_is_refused_before_calling_twilio(builder: CallBuilder) -> None:
    # The Organizations (SCIM) API takes OAuth 2.0 client-credential tokens, not Basic auth.
    exc = invalid_of(
        builder,
        basic(
            operation="CreateOrganizationUser",
            api="iam.organizations",
            params={"OrganizationSid": "OR1"},
            body={"userName": "ann", "active": True},
        ),
    )
    assert exc.invalid == ("operation",)
    assert "OAuth 2.0" in str(exc)


def test_bare_post_sends_an_empty_form_body(builder: CallBuilder) -> None:
    call = builder.build(basic(operation="UpdateMessage", params={"Sid": "SM1"}))
    assert call.method == "POST"
    assert call.content == b""
    assert call.headers == (("content-type", FORM),)


def test_body_for_an_operation_without_one_is_dropped_with_a_warning(
    builder: CallBuilder,
) -> None:
    call = builder.build(basic(operation="FetchMessage", params={"Sid": "SM1"}, body={"X": 1}))
    assert call.content is None
    assert header(call, "content-type") == []
    assert call.warnings == ("body.X: not in the spec of FetchMessage, ignored",)


# --- basic mode: validation --------------------------------------------------------------------


def test_every_missing_required_param_is_listed_at_once(builder: CallBuilder) -> None:
    exc = invalid_of(builder, basic(operation="CreateMessage", api="chat.v1"))
    assert sorted(exc.missing) == ["Body", "ChannelSid", "ServiceSid"]
    assert exc.invalid == ()
    assert "ServiceSid (params)" in exc.message and "Body (body)" in exc.message
    detail = exc.to_detail()
    assert detail.kind == "validation" and not detail.retryable
    assert sorted(detail.missing) == ["Body", "ChannelSid", "ServiceSid"]


def test_missing_body_params_are_bare_names(builder: CallBuilder) -> None:
    exc = invalid_of(builder, basic(operation="CreateCall", body={"Url": "https://x"}))
    assert sorted(exc.missing) == ["From", "To"]


def test_missing_required_query_param(builder: CallBuilder) -> None:
    exc = invalid_of(builder, basic(operation="ListChannelsSender", api="messaging.v2"))
    assert exc.missing == ("Channel",)
    assert "Channel (query)" in exc.message


def test_empty_path_param_counts_as_missing(builder: CallBuilder) -> None:
    exc = invalid_of(builder, basic(operation="FetchMessage", params={"Sid": ""}))
    assert exc.missing == ("Sid",)


def test_unknown_params_are_warnings_when_not_strict(builder: CallBuilder) -> None:
    call = builder.build(
        basic(
            operation="CreateMessage",
            params={"Extra": "e"},
            query={"Debug": "1"},
            body={"To": "+1", "Bogus": "b"},
        )
    )
    assert ("Bogus", "b") in form(call)  # sent anyway: the spec may lag behind Twilio
    assert query(call) == [("Debug", "1")]
    assert "Extra" not in call.path
    warnings = "\n".join(call.warnings)
    assert len(call.warnings) == 3
    assert "body.Bogus" in warnings and "query.Debug" in warnings and "params.Extra" in warnings


def test_unknown_body_param_is_invalid_with_a_strict_builder(catalog: Catalog) -> None:
    strict = CallBuilder(catalog, Accounts(CREDENTIALS), TwilioSettings(), strict=True)
    exc = invalid_of(strict, basic(operation="CreateMessage", body={"To": "+1", "Bogus": "b"}))
    assert exc.invalid == ("Bogus",)
    assert exc.missing == ()
    assert "Bogus (body)" in exc.message


def test_unknown_body_param_is_invalid_when_the_request_is_strict(builder: CallBuilder) -> None:
    request = basic(operation="CreateMessage", body={"To": "+1", "Bogus": "b"}, strict=True)
    exc = invalid_of(builder, request)
    assert exc.invalid == ("Bogus",)


def test_request_strict_false_overrides_a_strict_builder(catalog: Catalog) -> None:
    strict = CallBuilder(catalog, Accounts(CREDENTIALS), TwilioSettings(), strict=True)
    call = strict.build(
        basic(operation="CreateMessage", body={"To": "+1", "Bogus": "b"}, strict=False)
    )
    assert ("Bogus", "b") in form(call)
    assert any("Bogus" in w for w in call.warnings)


def test_strict_reports_missing_and_unknown_together(builder: CallBuilder) -> None:
    exc = invalid_of(builder, basic(operation="CreateMessage", body={"Bogus": 1}, strict=True))
    assert exc.missing == ("To",)
    assert exc.invalid == ("Bogus",)


@pytest.mark.parametrize(
    ("name", "expected"), [("CreateMesage", "CreateMessage"), ("createmessage", "CreateMessage")]
)
def test_unknown_operation_suggests_close_names(
    builder: CallBuilder, name: str, expected: str
) -> None:
    with pytest.raises(UnknownOperation) as info:
        builder.build(basic(operation=name))
    exc = info.value
    assert expected in exc.suggestions
    assert exc.invalid == ("operation",)
    assert exc.kind == "validation"
    assert f"'{name}'" in exc.message and "did you mean" in exc.message


def test_operation_absent_from_the_named_api_is_unknown(builder: CallBuilder) -> None:
    with pytest.raises(UnknownOperation) as info:
        builder.build(basic(operation="CreateMessage", api="verify.v2", body={"To": "+1"}))
    assert info.value.api == "verify.v2"
    assert "verify.v2" in info.value.message


def test_ambiguous_name_outside_api_v2010_needs_an_api(builder: CallBuilder) -> None:
    exc = invalid_of(builder, basic(operation="FetchPhoneNumber", params={"PhoneNumber": "+1"}))
    assert not isinstance(exc, UnknownOperation)
    assert exc.invalid == ("api",)
    assert "lookups.v1" in exc.message and "lookups.v2" in exc.message


def test_name_in_several_apis_defaults_to_api_v2010(builder: CallBuilder) -> None:
    call = builder.build(basic(operation="CreateMessage", body={"To": "+1"}))
    assert call.api == "api.v2010"


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        (
            {
                "operation": "CreateVerification",
                "api": "verify.v2",
                "params": {"ServiceSid": "VA1"},
                "body": {"To": "+1", "Channel": "sms"},
            },
            "https://verify.twilio.com/v2/Services/VA1/Verifications",
        ),
        (
            {
                "operation": "CreateMessage",
                "api": "chat.v2",
                "params": {"ServiceSid": "IS1", "ChannelSid": "CH1"},
            },
            "https://chat.twilio.com/v2/Services/IS1/Channels/CH1/Messages",
        ),
        (
            {"operation": "FetchPhoneNumber", "api": "lookups.v2", "params": {"PhoneNumber": "1"}},
            "https://lookups.twilio.com/v2/PhoneNumbers/1",
        ),
    ],
)
def test_explicit_api_selects_its_host(
    builder: CallBuilder, fields: dict[str, Any], url: str
) -> None:
    call = builder.build(basic(**fields))
    assert call.url == url
    assert call.api == fields["api"]


@pytest.mark.parametrize(
    "request_",
    [
        basic(operation="CreateMessage", body={"To": "+1"}, credential="nobody"),
        advanced(method="GET", path="/x", credential="nobody"),
    ],
    ids=["basic", "advanced"],
)
def test_unknown_credential_is_invalid(
    builder: CallBuilder, request_: BasicRequest | AdvancedRequest
) -> None:
    exc = invalid_of(builder, request_)
    assert exc.invalid == ("credential",)
    assert "'nobody'" in exc.message and "default" in exc.message
    assert "default-token" not in exc.message


def test_no_credentials_configured(catalog: Catalog) -> None:
    empty = CallBuilder(catalog, Accounts({}), TwilioSettings())
    exc = invalid_of(empty, basic(operation="CreateMessage", body={"To": "+1"}))
    assert exc.invalid == ("credential",)
    assert "none configured" in exc.message


def test_basic_next_page_uri_replaces_path_and_query(builder: CallBuilder) -> None:
    page = MESSAGES + "?PageSize=50&Page=1&PageToken=PASM1"
    call = builder.build(basic(operation="ListMessage", query={"PageSize": 50}, next_page_uri=page))
    assert call.path == page
    assert call.url == "https://api.twilio.com" + page
    assert call.content is None


def test_basic_next_page_uri_must_stay_on_twilio(builder: CallBuilder) -> None:
    exc = invalid_of(
        builder, basic(operation="ListMessage", next_page_uri="https://evil.example/x?Page=1")
    )
    assert exc.invalid == ("next_page_uri",)


def test_formats_are_converted_from_json_so_the_call_stays_the_same(
    builder: CallBuilder,
) -> None:
    # The bridge converts Twilio's JSON itself, so the call is the same for every format.
    call = builder.build(
        basic(operation="FetchMessage", params={"Sid": "SM1"}, response_format="xml")
    )
    assert call.path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages/SM1.json"
    assert call.warnings == ()


# --- settings: hosts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "settings", "origin"),
    [
        ("https://api.twilio.com", TwilioSettings(), "https://api.twilio.com"),
        ("https://verify.twilio.com", TwilioSettings(), "https://verify.twilio.com"),
        (
            "https://verify.twilio.com",
            TwilioSettings(base_url="http://127.0.0.1:4010/"),
            "http://127.0.0.1:4010",
        ),
        (
            "https://verify.twilio.com",
            TwilioSettings(base_url="http://mock.local:4010/{domain}"),
            "http://mock.local:4010/verify",
        ),
        (
            "https://flex-api.twilio.com",
            TwilioSettings(base_url="http://{domain}.mock.local"),
            "http://flex-api.mock.local",
        ),
        (
            "https://verify.twilio.com",
            TwilioSettings(region="au1", edge="sydney"),
            "https://verify.sydney.au1.twilio.com",
        ),
        (
            "https://api.twilio.com",
            TwilioSettings(edge="ashburn"),
            "https://api.ashburn.us1.twilio.com",
        ),
        ("https://api.twilio.com", TwilioSettings(region="ie1"), "https://api.ie1.twilio.com"),
        (
            "https://api.twilio.com",
            TwilioSettings(base_url="http://mock:1", region="ie1", edge="dublin"),
            "http://mock:1",
        ),
    ],
)
def test_origin_for(host: str, settings: TwilioSettings, origin: str) -> None:
    assert origin_for(host, settings) == origin


def test_builder_applies_region_and_edge(catalog: Catalog) -> None:
    regional = CallBuilder(
        catalog, Accounts(CREDENTIALS), TwilioSettings(region="ie1", edge="dublin")
    )
    call = regional.build(basic(operation="CreateMessage", body={"To": "+1"}))
    assert call.url == "https://api.dublin.ie1.twilio.com" + MESSAGES
    assert call.path == MESSAGES


def test_builder_applies_base_url(catalog: Catalog) -> None:
    mock = CallBuilder(
        catalog, Accounts(CREDENTIALS), TwilioSettings(base_url="http://127.0.0.1:4010")
    )
    call = mock.build(
        advanced(method="GET", path="/v2/Services", api="verify.v2", query={"PageSize": 5})
    )
    assert call.url == "http://127.0.0.1:4010/v2/Services?PageSize=5"


# --- advanced mode -----------------------------------------------------------------------------


def test_advanced_relative_path_with_form_string_is_sent_as_given(builder: CallBuilder) -> None:
    body = "To=%2B919876543210&From=%2B14155552671&Body=Hi+there&MediaUrl=a&MediaUrl=b"
    call = builder.build(advanced(method="POST", path=MESSAGES, body=body))
    assert call.url == "https://api.twilio.com" + MESSAGES
    assert (call.method, call.path, call.account.name) == ("POST", MESSAGES, "default")
    assert (call.api, call.operation) == (None, None)
    assert call.content == body.encode()
    assert call.headers == (("content-type", FORM),)
    assert call.warnings == ()


def test_advanced_lower_case_method_is_normalised(builder: CallBuilder) -> None:
    call = builder.build(advanced(method="delete", path=MESSAGES))
    assert call.method == "DELETE"
    assert call.content is None


@pytest.mark.parametrize("body", ["", "A=", "A=1&A=2&B=%20"])
def test_advanced_edge_form_strings_are_accepted(builder: CallBuilder, body: str) -> None:
    call = builder.build(advanced(method="POST", path="/x", body=body))
    assert call.content == body.encode()


@pytest.mark.parametrize("body", ["just some text", '{"To": "+1"}', "A=1&B", "&&&"])
def test_advanced_invalid_form_string_is_refused(builder: CallBuilder, body: str) -> None:
    exc = invalid_of(builder, advanced(method="POST", path=MESSAGES, body=body))
    assert exc.invalid == ("body",)


def test_advanced_object_body_is_form_encoded(builder: CallBuilder) -> None:
    call = builder.build(
        advanced(
            method="POST",
            path=MESSAGES,
            body={"To": "+1", "MediaUrl": ["a", "b"], "SendAsMms": True, "Cfg": {"a": 1}},
        )
    )
    assert call.content == (b"To=%2B1&MediaUrl=a&MediaUrl=b&SendAsMms=true&Cfg=%7B%22a%22%3A+1%7D")
    assert call.headers == (("content-type", FORM),)


def test_advanced_post_without_body_sends_empty_form(builder: CallBuilder) -> None:
    call = builder.build(advanced(method="POST", path=MESSAGES))
    assert call.content == b""
    assert call.headers == (("content-type", FORM),)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_advanced_body_without_send_body_is_dropped_with_a_warning(
    builder: CallBuilder, method: str
) -> None:
    call = builder.build(advanced(method=method, path=MESSAGES, body="A=1"))
    assert call.content is None
    assert call.headers == ()
    assert len(call.warnings) == 1 and "body not sent" in call.warnings[0]


def test_advanced_send_body_sends_it_with_get(builder: CallBuilder) -> None:
    call = builder.build(advanced(method="GET", path=MESSAGES, body={"A": 1}, send_body=True))
    assert call.content == b"A=1"
    assert call.headers == (("content-type", FORM),)
    assert call.warnings == ()


def test_advanced_get_without_body_has_no_body(builder: CallBuilder) -> None:
    call = builder.build(advanced(method="GET", path=MESSAGES))
    assert call.content is None and call.headers == () and call.warnings == ()


def test_advanced_query_is_appended(builder: CallBuilder) -> None:
    call = builder.build(
        advanced(method="GET", path=MESSAGES, query={"To": "+1", "PageSize": 20, "X": None})
    )
    assert call.path == MESSAGES + "?To=%2B1&PageSize=20"
    call = builder.build(advanced(method="GET", path=MESSAGES + "?A=1", query={"B": 2}))
    assert call.path == MESSAGES + "?A=1&B=2"


@pytest.mark.parametrize(
    ("api", "origin"),
    [
        ("verify.v2", "https://verify.twilio.com"),
        ("flex.v1", "https://flex-api.twilio.com"),
        ("api.v2010", "https://api.twilio.com"),
    ],
)
def test_advanced_api_selects_the_host(builder: CallBuilder, api: str, origin: str) -> None:
    call = builder.build(advanced(method="GET", path="/v1/Things", api=api))
    assert call.url == origin + "/v1/Things"
    assert call.api == api


def test_advanced_unknown_api_is_refused(builder: CallBuilder) -> None:
    exc = invalid_of(builder, advanced(method="GET", path="/v1/Things", api="evil.v1"))
    assert exc.invalid == ("api",)
    assert "evil.v1" in exc.message


@pytest.mark.parametrize(
    "path",
    [
        "http://evil.example/2010-04-01/Accounts",
        "https://api.twilio.com/2010-04-01/Accounts",
        "//evil.example/2010-04-01/Accounts",
        "///evil.example/x",
        "https://user@evil.example/x",
        "/user@evil.example/x",
        "user@evil.example/x",
        "/\\evil.example/x",
        "\\\\evil.example\\x",
        "/x\\y",
        "/x\r\nHost: evil.example",
        "/x\x00",
        "/x\ty",
        "/x y",
        "/x\x7f",
        "/2010-04-01/../evil",
        "/..",
        "/a/../../b",
        "2010-04-01/Accounts/AC1/Messages.json",
        "javascript:alert(1)",
        "mailto:x@evil.example",
    ],
)
def test_advanced_refuses_paths_off_the_twilio_host(builder: CallBuilder, path: str) -> None:
    exc = invalid_of(builder, advanced(method="GET", path=path))
    assert exc.invalid == ("path",)


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        (
            MESSAGES + "?PageSize=50&Page=1&PageToken=PA1",
            MESSAGES + "?PageSize=50&Page=1&PageToken=PA1",
        ),
        (
            "https://api.twilio.com" + MESSAGES + "?Page=2",
            MESSAGES + "?Page=2",
        ),
        ("https://API.Twilio.com/2010-04-01/x", "/2010-04-01/x"),
    ],
)
def test_advanced_next_page_uri_accepted(builder: CallBuilder, uri: str, path: str) -> None:
    call = builder.build(advanced(method="GET", path="/ignored", next_page_uri=uri))
    assert call.path == path
    assert call.url == "https://api.twilio.com" + path


def test_advanced_next_page_url_on_a_product_host_with_its_api(builder: CallBuilder) -> None:
    uri = "https://messaging.twilio.com/v1/Services?PageSize=50&Page=1&PageToken=PA1"
    call = builder.build(
        advanced(method="GET", path="/v1/Services", api="messaging.v1", next_page_uri=uri)
    )
    assert call.url == uri
    assert call.path == "/v1/Services?PageSize=50&Page=1&PageToken=PA1"


def test_advanced_next_page_url_keeps_its_twilio_host(builder: CallBuilder) -> None:
    uri = "https://messaging.twilio.com/v1/Services?PageSize=50&Page=1&PageToken=PA1"
    call = builder.build(advanced(method="GET", path="/v1/Services", next_page_uri=uri))
    assert call.url == uri


@pytest.mark.parametrize(
    "uri",
    [
        "https://evil.example/2010-04-01/x",
        "http://api.twilio.com/2010-04-01/x",
        "https://api.twilio.com.evil.example/x",
        "https://twilio.com.evil.example/x",
        "https://eviltwilio.com/x",
        "ftp://api.twilio.com/x",
        "//evil.example/x",
        "/a/../b",
        "no-slash",
        "/x\\y",
    ],
)
def test_advanced_next_page_uri_off_twilio_is_refused(builder: CallBuilder, uri: str) -> None:
    exc = invalid_of(builder, advanced(method="GET", path="/x", next_page_uri=uri))
    assert exc.invalid == ("next_page_uri",)


# --- headers from the Kafka record --------------------------------------------------------------

RECORD_HEADERS = [
    ("Authorization", "Basic ZXZpbDpldmls"),
    ("Proxy-Authorization", "Basic x"),
    ("Host", "evil.example"),
    ("Content-Length", "5"),
    ("Content-Type", "text/plain"),
    ("Transfer-Encoding", "chunked"),
    ("Connection", "close"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Trailer", "X"),
    ("Upgrade", "h2c"),
    ("Proxy-Connection", "keep-alive"),
    ("Cookie", "a=b"),
    ("Expect", "100-continue"),
    ("X-Trace-Id", "t-1"),
    ("I-Twilio-Idempotency-Token", "k-1"),
]


@pytest.mark.parametrize(
    "request_",
    [
        basic(operation="CreateMessage", body={"To": "+1"}, request_headers="*"),
        advanced(method="POST", path=MESSAGES, body="To=%2B1", request_headers="*"),
        basic(operation="FetchMessage", params={"Sid": "SM1"}, request_headers="*"),
    ],
    ids=["basic-post", "advanced-post", "basic-get"],
)
def test_forbidden_headers_are_never_forwarded(
    builder: CallBuilder, request_: BasicRequest | AdvancedRequest
) -> None:
    call = builder.build(request_, RECORD_HEADERS)
    names = [name.lower() for name, _ in call.headers]
    assert "x-trace-id" in names and "i-twilio-idempotency-token" in names
    forwarded = {name for name in names if name != "content-type"}
    assert forwarded == {"x-trace-id", "i-twilio-idempotency-token"}
    # Only the bridge's own content type, and only when there is a body.
    assert header(call, "content-type") == ([FORM] if call.content is not None else [])


@pytest.mark.parametrize("name", sorted(FORBIDDEN_REQUEST_HEADERS))
@pytest.mark.parametrize("spelling", [str.lower, str.upper, str.title])
def test_each_forbidden_header_is_dropped_whatever_the_selection(
    builder: CallBuilder, name: str, spelling: Callable[[str], str]
) -> None:
    wire_name = spelling(name)
    for selection in ("*", [wire_name], wire_name):
        request = basic(operation="FetchMessage", params={"Sid": "SM1"}, request_headers=selection)
        call = builder.build(request, [(wire_name, "smuggled")])
        assert call.headers == ()


def test_request_headers_select_what_is_forwarded(builder: CallBuilder) -> None:
    record = [("X-A", "1"), ("X-B", "2"), ("x-a", "3")]
    none = builder.build(basic(operation="FetchMessage", params={"Sid": "S"}), record)
    assert none.headers == ()
    some = builder.build(
        basic(operation="FetchMessage", params={"Sid": "S"}, request_headers="X-A"), record
    )
    assert some.headers == (("x-a", "1, 3"),)


# --- sender, for per-sender pacing -------------------------------------------------------------

SERVICE = "MG0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("request_", "sender"),
    [
        (
            basic(operation="CreateMessage", body={"To": "+1", "From": "+14155550001"}),
            "+14155550001",
        ),
        # Twilio sends from the service's pool when both are given, so the service is the sender.
        (
            basic(
                operation="CreateMessage",
                body={"To": "+1", "From": "+14155550001", "MessagingServiceSid": SERVICE},
            ),
            SERVICE,
        ),
        (
            basic(
                operation="CreateCall",
                body={"To": "+1", "From": "+14155550001", "Url": "https://x"},
            ),
            "+14155550001",
        ),
        (basic(operation="FetchMessage", params={"Sid": "SM1"}), None),
        (
            advanced(method="POST", path=MESSAGES, body="To=%2B1&From=%2B14155550002"),
            "+14155550002",
        ),
        (
            advanced(
                method="POST", path=MESSAGES, body={"To": "+1", "MessagingServiceSid": SERVICE}
            ),
            SERVICE,
        ),
        (advanced(method="GET", path=MESSAGES, body={"From": "+14155550002"}), None),
    ],
)
def test_sender_is_the_messaging_service_or_the_from_number(
    builder: CallBuilder, request_: BasicRequest | AdvancedRequest, sender: str | None
) -> None:
    assert builder.build(request_).sender == sender


# --- instances: accounts added at runtime ------------------------------------------------------


INSTANCE_MESSAGES = f"/2010-04-01/Accounts/{INSTANCE_ACCOUNT}/Messages.json"


def instance_account(name: str = "acme", **configuration: Any) -> Account:
    instance = stored_instance(name, INSTANCE_ACCOUNT, "acme-token", **configuration)
    return account_of(instance, TwilioSettings())


def with_instance(catalog: Catalog, account: Account) -> tuple[CallBuilder, Accounts]:
    accounts = Accounts(CREDENTIALS)
    accounts.put(account)
    return CallBuilder(catalog, accounts, TwilioSettings()), accounts


def test_an_envelope_naming_an_instance_uses_its_account(catalog: Catalog) -> None:
    builder, _ = with_instance(catalog, instance_account())
    call = builder.build(basic(operation="CreateMessage", body={"To": "+1"}, credential="acme"))
    assert call.path == INSTANCE_MESSAGES
    assert call.url == "https://api.twilio.com" + INSTANCE_MESSAGES
    assert call.account.name == "acme"
    assert call.account.auth == basic_auth_header(
        Credential(account_sid=INSTANCE_ACCOUNT, auth_token=SecretStr("acme-token"))
    )


def test_a_deleted_instance_fails_new_builds_but_not_built_calls(catalog: Catalog) -> None:
    builder, accounts = with_instance(catalog, instance_account())
    request = basic(operation="CreateMessage", body={"To": "+1"}, credential="acme")
    built = builder.build(request)
    accounts.remove("acme", "2026-01-02T03:04:05.000Z")
    exc = invalid_of(builder, request)
    assert exc.invalid == ("credential",)
    assert "deleted" in exc.message and "2026-01-02T03:04:05.000Z" in exc.message
    # The call built before the delete still goes out as the account it was built for.
    assert built.account.name == "acme" and built.account.account_sid == INSTANCE_ACCOUNT
    assert built.path == INSTANCE_MESSAGES


def test_a_changed_instance_applies_to_the_next_build(catalog: Catalog) -> None:
    builder, accounts = with_instance(catalog, instance_account())
    request = basic(operation="CreateMessage", body={"To": "+1"}, credential="acme")
    before = builder.build(request)
    accounts.put(instance_account(region="ie1"))
    after = builder.build(request)
    assert before.url.startswith("https://api.twilio.com/")
    assert after.url.startswith("https://api.ie1.twilio.com/")


@pytest.mark.parametrize(
    "request_",
    [
        basic(operation="CreateMessage", body={"To": "+1"}, credential="acme"),
        advanced(method="POST", path=INSTANCE_MESSAGES, body={"To": "+1"}, credential="acme"),
    ],
    ids=["basic", "advanced"],
)
def test_an_instances_endpoint_applies_to_its_calls_only(
    catalog: Catalog, request_: BasicRequest | AdvancedRequest
) -> None:
    builder, _ = with_instance(catalog, instance_account(region="au1", edge="sydney"))
    call = builder.build(request_)
    assert call.url == "https://api.sydney.au1.twilio.com" + INSTANCE_MESSAGES
    static = builder.build(basic(operation="CreateMessage", body={"To": "+1"}))
    assert static.url == "https://api.twilio.com" + MESSAGES


def test_an_instances_base_url_applies_to_every_domain(catalog: Catalog) -> None:
    builder, _ = with_instance(catalog, instance_account(base_url="http://mock:4010/{domain}"))
    call = builder.build(
        advanced(method="GET", path="/v2/Services", api="verify.v2", credential="acme")
    )
    assert call.url == "http://mock:4010/verify/v2/Services"


# --- header parameters of the spec, given in params --------------------------------------------


def test_header_params_of_the_spec_are_sent_as_headers(builder: CallBuilder) -> None:
    call = builder.build(
        basic(
            operation="UpdateDocument",
            api="sync.v1",
            params={"ServiceSid": "IS1", "Sid": "ET1", "If-Match": "etag-1"},
            body={"Data": {"a": 1}},
        )
    )
    assert header(call, "if-match") == ["etag-1"]
    assert call.path == "/v1/Services/IS1/Documents/ET1"
    assert call.warnings == ()
    conversation = builder.build(
        basic(
            operation="CreateConversation",
            api="conversations.v1",
            # Header names are case-insensitive; a boolean goes out as Twilio's "true".
            params={"x-twilio-webhook-enabled": True},
        )
    )
    assert conversation.headers[0] == ("X-Twilio-Webhook-Enabled", "true")


def test_a_header_param_replaces_a_forwarded_record_header(builder: CallBuilder) -> None:
    request = basic(
        operation="DeleteTask",
        api="taskrouter.v1",
        params={"WorkspaceSid": "WS1", "Sid": "WT1", "If-Match": "2"},
        request_headers="*",
    )
    call = builder.build(request, [("if-match", "1"), ("X-Trace", "t")])
    assert call.headers == (("x-trace", "t"), ("If-Match", "2"))
    assert call.method == "DELETE" and call.content is None


def test_authorization_is_never_taken_from_params(builder: CallBuilder) -> None:
    exc = invalid_of(
        builder,
        basic(operation="ListInsightsSegments", api="flex.v1", params={"Authorization": "x"}),
    )
    assert exc.invalid == ("Authorization",)
    assert "set by the bridge" in exc.message


def test_a_header_param_value_must_fit_in_a_header(builder: CallBuilder) -> None:
    exc = invalid_of(
        builder,
        basic(
            operation="DeleteTask",
            api="taskrouter.v1",
            params={"WorkspaceSid": "WS1", "Sid": "WT1", "If-Match": "a\r\nX-Evil: 1"},
        ),
    )
    assert exc.invalid == ("If-Match",)


def test_a_header_param_of_another_operation_is_unknown(builder: CallBuilder) -> None:
    call = builder.build(basic(operation="FetchMessage", params={"Sid": "SM1", "If-Match": "1"}))
    assert call.headers == ()
    assert call.warnings == ("params.If-Match: not in the spec of FetchMessage, ignored",)


def test_a_boolean_path_value_is_spelled_as_twilio_does(builder: CallBuilder) -> None:
    call = builder.build(basic(operation="FetchMessage", params={"Sid": True}))
    assert call.path.endswith("/Messages/true.json")


def test_a_required_header_param_missing_is_named() -> None:
    op = Operation(
        api="widgets.v1",
        operation="FetchWidget",
        method="GET",
        host="https://widgets.twilio.com",
        path="/v1/Widget",
        summary="",
        content_type=None,
        params=(Param("If-Match", "header", "string", None, True),),
    )
    builder = CallBuilder(Catalog([op]), Accounts(CREDENTIALS), TwilioSettings())
    exc = invalid_of(builder, basic(operation="FetchWidget"))
    assert exc.missing == ("If-Match",) and "If-Match (params)" in exc.message
    call = builder.build(basic(operation="FetchWidget", params={"if-match": "1"}))
    assert call.headers == (("If-Match", "1"),)


# --- what a span may show of a URL -----------------------------------------------------------

MESSAGE_LIST = f"/2010-04-01/Accounts/{ACCOUNT}/Messages"
MESSAGE_SID = "SM" + "a" * 32


@pytest.mark.parametrize(
    ("path", "template"),
    [
        (f"{MESSAGE_LIST}.json", "/2010-04-01/Accounts/{Sid}/Messages.json"),
        (f"{MESSAGE_LIST}/{MESSAGE_SID}.json", "/2010-04-01/Accounts/{Sid}/Messages/{Sid}.json"),
        (f"{MESSAGE_LIST}/{MESSAGE_SID}/Media", "/2010-04-01/Accounts/{Sid}/Messages/{Sid}/Media"),
        (
            f"{MESSAGE_LIST}.json?To=%2B15551234567&PageSize=50&Page=1&PageToken=PAx",
            "/2010-04-01/Accounts/{Sid}/Messages.json",
        ),
        ("/v2/PhoneNumbers/+15551234567", "/v2/PhoneNumbers/{id}"),
        ("/v2/PhoneNumbers/%2B15551234567", "/v2/PhoneNumbers/{id}"),
        ("/v1/PhoneNumbers/whatsapp:+15551234567", "/v1/PhoneNumbers/{id}"),
        (
            f"/2010-04-01/Accounts/{ACCOUNT}/OutgoingCallerIds/+15551234567.json",
            "/2010-04-01/Accounts/{Sid}/OutgoingCallerIds/{id}.json",
        ),
        ("/v1/Services/IS" + "0" * 32 + "/Users/bob@example.com", "/v1/Services/{Sid}/Users/{id}"),
        ("/v1/Verifications/123456", "/v1/Verifications/{id}"),
        ("/v1/Services/IS" + "0" * 32 + "/Users/alice", "/v1/Services/{Sid}/Users/{id}"),
        # A value that looks like a name of Twilio's is none the less a value.
        ("/v1/Services/IS" + "0" * 32 + "/Users/Alice", "/v1/Services/{Sid}/Users/{id}"),
        ("/v1/Conversations/Support/Messages", "/v1/Conversations/{id}/Messages"),
        (
            "/v2/Services/VA" + "f" * 32 + "/VerificationCheck",
            "/v2/Services/{Sid}/VerificationCheck",
        ),
        ("/v1/Flows/", "/v1/Flows/"),
        ("/2010-04-01/Accounts.json", "/2010-04-01/Accounts.json"),
    ],
)
def test_url_template(path: str, template: str, catalog: Catalog) -> None:
    assert url_template(path, path_names(catalog)) == template


def test_url_template_keeps_nothing_of_a_value(catalog: Catalog) -> None:
    path = f"{MESSAGE_LIST}/{MESSAGE_SID}.json?To=%2B15551234567&Body=secret"
    shown = url_template(path, path_names(catalog))
    for value in (ACCOUNT, MESSAGE_SID, "5551234567", "Body", "secret", "?"):
        assert value not in shown


def test_a_basic_calls_template_is_the_specs_and_an_advanced_calls_has_its_values_taken_out(
    builder: CallBuilder,
) -> None:
    fetched = builder.build(basic(operation="FetchMessage", params={"Sid": MESSAGE_SID}))
    assert fetched.url_template == "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"
    path = f"{MESSAGE_LIST}/{MESSAGE_SID}.json"
    advanced = builder.build(AdvancedRequest(id="a", mode="advanced", method="GET", path=path))
    assert advanced.url_template == "/2010-04-01/Accounts/{Sid}/Messages/{Sid}.json"
