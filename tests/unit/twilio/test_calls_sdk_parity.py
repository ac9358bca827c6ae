"""Each request as Twilio's own Python SDK sends it: the bridge against ``twilio`` 9.13.

The SDK builds its request through its real ``TwilioHttpClient``, whose ``requests`` session
records the prepared request instead of sending it; the bridge builds the call from the
equivalent basic envelope. Compared: method, path (segment by segment, percent-decoded: the
SDK leaves ``+`` literal where the bridge writes ``%2B``, the same segment to Twilio), query
pairs, form pairs or the JSON body (as bytes), the content type and the spec's header
parameters. Each case says what it covers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
import requests
from pydantic import SecretStr
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.rest.content.v1.content import ContentList
from twilio.rest.knowledge.v1.knowledge import KnowledgeList

from bridge.config import Credential, TwilioSettings
from bridge.contract.envelopes import BasicRequest
from bridge.twilio.accounts import Accounts
from bridge.twilio.calls import CallBuilder, TwilioCall
from bridge.twilio.catalog import Catalog
from tests.helpers import ACCOUNT

TOKEN = "sdk-parity-token"
SID = "SM" + "1" * 32
SERVICE = "IS" + "2" * 32
WORKSPACE = "WS" + "3" * 32
WHEN = datetime(2026, 4, 14, 9, 30, 5, tzinfo=UTC)
WHEN_TEXT = "2026-04-14T09:30:05Z"
# The spec's header parameters that the SDK takes as arguments and sends as headers.
HEADER_PARAMS = ("x-twilio-webhook-enabled", "if-match", "flex-metadata", "x-twilio-api-version")


class _RecordingSession(requests.Session):
    """What the SDK's client would put on the wire, kept instead of sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **_: Any) -> requests.Response:
        self.sent.append(request)
        response = requests.Response()
        response.status_code = 200
        response._content = b'{"meta": {"key": "items"}, "items": []}'
        return response


@dataclass(frozen=True)
class Wire:
    """One request, reduced to what both sides must agree on."""

    method: str
    segments: tuple[str, ...]
    query: dict[str, list[str]]
    form: dict[str, list[str]] | None
    json_body: bytes | None
    content_type: str | None
    headers: dict[str, str]


def _pairs(text: str) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)):
        grouped.setdefault(name, []).append(value)
    return grouped


def _wire(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Wire:
    parts = urlsplit(url)
    content_type = headers.get("content-type") if body else None
    is_json = content_type is not None and content_type.endswith("json")
    return Wire(
        method=method,
        segments=tuple(unquote(segment) for segment in parts.path.split("/")),
        query=_pairs(parts.query),
        form=_pairs(body.decode()) if body and not is_json else None,
        json_body=body if is_json else None,
        content_type=content_type,
        headers={k: v for k, v in headers.items() if k in HEADER_PARAMS},
    )


def sdk_request(call: Callable[[Client], object]) -> Wire:
    """What the SDK sends for ``call(client)``."""
    http = TwilioHttpClient()
    session = _RecordingSession()
    http.session = session
    call(Client(ACCOUNT, TOKEN, http_client=http))
    (sent,) = session.sent
    body = sent.body.encode() if isinstance(sent.body, str) else sent.body
    assert body is None or isinstance(body, bytes)
    headers = {k.lower(): str(v) for k, v in sent.headers.items()}
    assert sent.method is not None and sent.url is not None
    return _wire(sent.method, sent.url, body, headers)


@pytest.fixture(scope="module")
def builder() -> CallBuilder:
    credential = Credential(account_sid=ACCOUNT, auth_token=SecretStr(TOKEN))
    return CallBuilder(Catalog.load(), Accounts({"default": credential}), TwilioSettings())


def bridge_request(builder: CallBuilder, envelope: dict[str, Any]) -> Wire:
    """What the bridge sends for the basic ``envelope``."""
    request = BasicRequest.model_validate({"id": "parity", "mode": "basic", **envelope})
    call: TwilioCall = builder.build(request)
    assert call.warnings == (), call.warnings
    headers = {k.lower(): v for k, v in call.headers}
    return _wire(call.method, call.url, call.content, headers)


@dataclass(frozen=True)
class Case:
    covers: str
    sdk: Callable[[Client], object]
    envelope: dict[str, Any]


def _v2010(client: Client) -> Any:
    return client.api.v2010.accounts(ACCOUNT)


CASES = [
    Case(
        "api.v2010 POST: lists, booleans, integers, a date-time, an enum, a JSON string, "
        "non-ASCII and reserved characters in values",
        lambda c: _v2010(c).messages.create(
            to="+14155552671",
            from_="whatsapp:+14155550000",
            body="Hé & = + ? 👍 %20",
            media_url=["https://demo.twilio.com/owl.png", "https://demo.twilio.com/2.png"],
            send_as_mms=True,
            smart_encoded=False,
            validity_period=600,
            send_at=WHEN,
            schedule_type="fixed",
            content_variables=json.dumps({"1": "Ann"}),
        ),
        {
            "operation": "CreateMessage",
            "body": {
                "To": "+14155552671",
                "From": "whatsapp:+14155550000",
                "Body": "Hé & = + ? 👍 %20",
                "MediaUrl": ["https://demo.twilio.com/owl.png", "https://demo.twilio.com/2.png"],
                "SendAsMms": True,
                "SmartEncoded": False,
                "ValidityPeriod": 600,
                "SendAt": WHEN_TEXT,
                "ScheduleType": "fixed",
                "ContentVariables": '{"1": "Ann"}',
            },
        },
    ),
    Case(
        "api.v2010 GET: date-time range filters (StartTime>, StartTime<), an enum, page size",
        lambda c: _v2010(c).calls.page(
            start_time_after=WHEN,
            start_time_before=datetime(2026, 4, 15, tzinfo=UTC),
            status="completed",
            to="+14155552671",
            page_size=20,
        ),
        {
            "operation": "ListCall",
            "query": {
                "To": "+14155552671",
                "Status": "completed",
                "StartTime<": "2026-04-15T00:00:00Z",
                "StartTime>": WHEN_TEXT,
                "PageSize": 20,
            },
        },
    ),
    Case(
        "api.v2010 GET: a date-range filter on dates (DateSent>)",
        lambda c: _v2010(c).messages.page(date_sent_after=WHEN, page_size=50),
        {"operation": "ListMessage", "query": {"DateSent>": WHEN_TEXT, "PageSize": 50}},
    ),
    Case(
        "api.v2010 GET: a path value with a space, '+' and non-ASCII",
        lambda c: _v2010(c).messages("a b+é").fetch(),
        {"operation": "FetchMessage", "params": {"Sid": "a b+é"}},
    ),
    Case(
        "api.v2010 DELETE",
        lambda c: _v2010(c).messages(SID).delete(),
        {"operation": "DeleteMessage", "params": {"Sid": SID}},
    ),
    Case(
        "api.v2010 POST: TwiML with markup and quotes",
        lambda c: (
            _v2010(c)
            .calls("CA" + "4" * 32)
            .update(twiml='<Response><Say voice="alice">Bye & thanks</Say></Response>')
        ),
        {
            "operation": "UpdateCall",
            "params": {"Sid": "CA" + "4" * 32},
            "body": {"Twiml": '<Response><Say voice="alice">Bye & thanks</Say></Response>'},
        },
    ),
    Case(
        "api.v2010 GET: a date filter (StartDate, a date) on usage records",
        lambda c: _v2010(c).usage.records.daily.page(
            category="sms", start_date=date(2026, 4, 1), end_date=date(2026, 4, 14)
        ),
        {
            "operation": "ListUsageRecordDaily",
            "query": {"Category": "sms", "StartDate": "2026-04-01", "EndDate": "2026-04-14"},
        },
    ),
    Case(
        "lookups.v1 GET: a nested prefixed-collapsible map flattened at every depth, lists, "
        "'+' in the path",
        lambda c: c.lookups.v1.phone_numbers("+14155552671").fetch(
            type=["carrier", "caller-name"],
            add_ons=["payfone_tcpa_compliance"],
            add_ons_data={"payfone_tcpa_compliance": {"RightPartyContactedDate": "20160101"}},
        ),
        {
            "operation": "FetchPhoneNumber",
            "api": "lookups.v1",
            "params": {"PhoneNumber": "+14155552671"},
            "query": {
                "Type": ["carrier", "caller-name"],
                "AddOns": ["payfone_tcpa_compliance"],
                "AddOnsData": {"payfone_tcpa_compliance": {"RightPartyContactedDate": "20160101"}},
            },
        },
    ),
    Case(
        "lookups.v2 GET: a comma-separated fields list and a country code",
        lambda c: c.lookups.v2.phone_numbers("(415) 555-2671").fetch(
            fields="line_type_intelligence,caller_name", country_code="US"
        ),
        {
            "operation": "FetchPhoneNumber",
            "api": "lookups.v2",
            "params": {"PhoneNumber": "(415) 555-2671"},
            "query": {"Fields": "line_type_intelligence,caller_name", "CountryCode": "US"},
        },
    ),
    Case(
        "verify.v2 POST: an object parameter sent as a JSON string, a boolean",
        lambda c: c.verify.v2.services("VA" + "5" * 32).verifications.create(
            to="+14155552671",
            channel="sms",
            channel_configuration={"template_id": "HJ1", "substitutions": {"name": "Åsa"}},
            rate_limits={"user_id": "u-1"},
            enable_sna_client_token=True,
        ),
        {
            "operation": "CreateVerification",
            "params": {"ServiceSid": "VA" + "5" * 32},
            "body": {
                "To": "+14155552671",
                "Channel": "sms",
                "ChannelConfiguration": {"template_id": "HJ1", "substitutions": {"name": "Åsa"}},
                "RateLimits": {"user_id": "u-1"},
                "EnableSnaClientToken": True,
            },
        },
    ),
    Case(
        "sync.v1 POST: the If-Match header parameter, an object as a JSON string, an integer",
        lambda c: (
            c.sync.v1.services(SERVICE)
            .documents("ET" + "6" * 32)
            .update(if_match="W/etag-7", data={"score": 1.5, "tags": ["a", "b"]}, ttl=3600)
        ),
        {
            "operation": "UpdateDocument",
            "api": "sync.v1",
            "params": {"ServiceSid": SERVICE, "Sid": "ET" + "6" * 32, "If-Match": "W/etag-7"},
            "body": {"Data": {"score": 1.5, "tags": ["a", "b"]}, "Ttl": 3600},
        },
    ),
    Case(
        "sync.v1 DELETE: a map item key with a space and non-ASCII in the path",
        lambda c: (
            c.sync.v1.services(SERVICE).sync_maps("MP" + "7" * 32).sync_map_items("clé 1").delete()
        ),
        {
            "operation": "DeleteSyncMapItem",
            "params": {"ServiceSid": SERVICE, "MapSid": "MP" + "7" * 32, "Key": "clé 1"},
        },
    ),
    Case(
        "conversations.v1 POST: the X-Twilio-Webhook-Enabled header parameter, a date-time",
        lambda c: c.conversations.v1.conversations.create(
            friendly_name="Support", date_created=WHEN, x_twilio_webhook_enabled="true"
        ),
        {
            "operation": "CreateConversation",
            "params": {"X-Twilio-Webhook-Enabled": "true"},
            "body": {"FriendlyName": "Support", "DateCreated": WHEN_TEXT},
        },
    ),
    Case(
        "chat.v2 POST: X-Twilio-Webhook-Enabled given as a JSON boolean in the envelope",
        lambda c: c.chat.v2.services(SERVICE).channels.create(
            friendly_name="room", x_twilio_webhook_enabled="true"
        ),
        {
            "operation": "CreateChannel",
            "api": "chat.v2",
            "params": {"ServiceSid": SERVICE, "X-Twilio-Webhook-Enabled": True},
            "body": {"FriendlyName": "room"},
        },
    ),
    Case(
        "taskrouter.v1 GET: a boolean and a list filter in the query",
        lambda c: c.taskrouter.v1.workspaces(WORKSPACE).tasks.page(
            assignment_status=["pending", "reserved"], has_addons=True, page_size=10
        ),
        {
            "operation": "ListTask",
            "params": {"WorkspaceSid": WORKSPACE},
            "query": {
                "AssignmentStatus": ["pending", "reserved"],
                "HasAddons": True,
                "PageSize": 10,
            },
        },
    ),
    Case(
        "taskrouter.v1 POST: If-Match on an update, a JSON-string attribute",
        lambda c: (
            c.taskrouter.v1.workspaces(WORKSPACE)
            .tasks("WT" + "8" * 32)
            .update(if_match="5", attributes=json.dumps({"lang": "es"}), priority=3)
        ),
        {
            "operation": "UpdateTask",
            "params": {"WorkspaceSid": WORKSPACE, "Sid": "WT" + "8" * 32, "If-Match": "5"},
            "body": {"Attributes": '{"lang": "es"}', "Priority": 3},
        },
    ),
    Case(
        "video.v1 POST: a list of enums, booleans, an integer",
        lambda c: c.video.v1.rooms.create(
            unique_name="daily",
            type="group",
            video_codecs=["VP8", "H264"],
            record_participants_on_connect=False,
            max_participants=10,
        ),
        {
            "operation": "CreateRoom",
            "body": {
                "UniqueName": "daily",
                "Type": "group",
                "VideoCodecs": ["VP8", "H264"],
                "RecordParticipantsOnConnect": False,
                "MaxParticipants": 10,
            },
        },
    ),
    Case(
        "studio.v2 POST: an object with nested values sent as a JSON string",
        lambda c: c.studio.v2.flows("FW" + "9" * 32).executions.create(
            to="+14155552671", from_="+14155550000", parameters={"order": {"id": 7, "gift": False}}
        ),
        {
            "operation": "CreateExecution",
            "api": "studio.v2",
            "params": {"FlowSid": "FW" + "9" * 32},
            "body": {
                "To": "+14155552671",
                "From": "+14155550000",
                "Parameters": {"order": {"id": 7, "gift": False}},
            },
        },
    ),
    Case(
        "messaging.v1 POST: the X-Twilio-Api-Version header parameter, a list, booleans",
        lambda c: c.messaging.v1.services("MG" + "a" * 32).us_app_to_person.create(
            brand_registration_sid="BN" + "b" * 32,
            description="Order updates",
            message_flow="Opt in on checkout",
            message_samples=["Your order shipped", "Your order arrived"],
            us_app_to_person_usecase="MIXED",
            has_embedded_links=False,
            has_embedded_phone=True,
            x_twilio_api_version="v1.1",
        ),
        {
            "operation": "CreateUsAppToPerson",
            "params": {"MessagingServiceSid": "MG" + "a" * 32, "X-Twilio-Api-Version": "v1.1"},
            "body": {
                "BrandRegistrationSid": "BN" + "b" * 32,
                "Description": "Order updates",
                "MessageFlow": "Opt in on checkout",
                "MessageSamples": ["Your order shipped", "Your order arrived"],
                "UsAppToPersonUsecase": "MIXED",
                "HasEmbeddedLinks": False,
                "HasEmbeddedPhone": True,
            },
        },
    ),
    Case(
        "flex.v1 POST: the Flex-Metadata header parameter",
        lambda c: c.flex_api.v1.plugins.create(
            unique_name="hello", friendly_name="Hello", flex_metadata="ui=2.8"
        ),
        {
            "operation": "CreatePlugin",
            "api": "flex.v1",
            "params": {"Flex-Metadata": "ui=2.8"},
            "body": {"UniqueName": "hello", "FriendlyName": "Hello"},
        },
    ),
    Case(
        "content.v1 POST: a JSON body with nested objects and non-ASCII",
        lambda c: c.content.v1.contents.create(
            ContentList.ContentCreateRequest(
                {
                    "friendly_name": "greeting",
                    "language": "fr",
                    "variables": {"1": "Zoé"},
                    "types": {"twilio/text": {"body": "Bonjour {{1}}"}},
                }
            )
        ),
        {
            "operation": "CreateContent",
            "api": "content.v1",
            # The SDK leaves out what is None, and keeps its model's order of fields.
            "body": {
                "friendly_name": "greeting",
                "variables": {"1": "Zoé"},
                "language": "fr",
                "types": {"twilio/text": {"body": "Bonjour {{1}}"}},
            },
        },
    ),
    Case(
        "knowledge.v1 PUT: a JSON body",
        lambda c: c.knowledge.v1.knowledge("know_1").update(
            knowledge_v1_service_update_knowledge_request=KnowledgeList.KnowledgeV1ServiceUpdateKnowledgeRequest(
                {"name": "FAQ", "description": "Questions", "type": "Web"}
            )
        ),
        {
            "operation": "UpdateKnowledge",
            "api": "knowledge.v1",
            "params": {"id": "know_1"},
            "body": {"description": "Questions", "name": "FAQ", "type": "Web"},
        },
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.covers[:60])
def test_the_bridge_sends_what_the_sdk_sends(builder: CallBuilder, case: Case) -> None:
    assert bridge_request(builder, case.envelope) == sdk_request(case.sdk)


def test_the_cases_cover_at_least_twelve_apis(builder: CallBuilder) -> None:
    apis = {builder_api(case.envelope) for case in CASES}
    assert len(apis) >= 12, sorted(apis)
    methods = {sdk_request(case.sdk).method for case in CASES}
    assert methods == {"GET", "POST", "PUT", "DELETE"}


def builder_api(envelope: dict[str, Any]) -> str:
    return Catalog.load().resolve(envelope["operation"], envelope.get("api")).api


# --- where the SDK is wrong, and the bridge keeps its own behaviour ---------------------------


def test_a_slash_in_a_path_value_stays_in_its_segment(builder: CallBuilder) -> None:
    # The SDK does not encode '/' in a path value: "SM1/x" addresses another resource. The
    # bridge encodes it (%2F) and keeps the value one segment.
    sdk = sdk_request(lambda c: _v2010(c).messages("SM1/x").fetch())
    ours = bridge_request(builder, {"operation": "FetchMessage", "params": {"Sid": "SM1/x"}})
    assert sdk.segments[-2:] == ("SM1", "x.json")
    assert ours.segments[-1] == "SM1/x.json"
    assert ours.segments[:-1] == sdk.segments[:-2]


def test_if_match_on_a_delete_is_sent_where_the_sdk_drops_it(builder: CallBuilder) -> None:
    # The SDK's generated delete builds the If-Match header and then replaces the headers
    # with an empty set: the precondition is lost. The spec declares it; the bridge sends it.
    sdk = sdk_request(
        lambda c: c.taskrouter.v1.workspaces(WORKSPACE).tasks("WT" + "8" * 32).delete(if_match="5")
    )
    ours = bridge_request(
        builder,
        {
            "operation": "DeleteTask",
            "params": {"WorkspaceSid": WORKSPACE, "Sid": "WT" + "8" * 32, "If-Match": "5"},
        },
    )
    assert (sdk.headers, ours.headers) == ({}, {"if-match": "5"})
    assert replace(ours, headers={}) == sdk


def test_x_twilio_api_version_on_a_list_is_a_header_not_also_a_query_param(
    builder: CallBuilder,
) -> None:
    # The SDK's generated page() puts the header parameter in the query string as well.
    sdk = sdk_request(
        lambda c: c.messaging.v1.services("MG" + "a" * 32).us_app_to_person.page(
            x_twilio_api_version="v1.1"
        )
    )
    ours = bridge_request(
        builder,
        {
            "operation": "ListUsAppToPerson",
            "params": {"MessagingServiceSid": "MG" + "a" * 32, "X-Twilio-Api-Version": "v1.1"},
        },
    )
    assert sdk.query == {"X-Twilio-Api-Version": ["v1.1"]} and ours.query == {}
    assert replace(ours, query=sdk.query) == sdk
