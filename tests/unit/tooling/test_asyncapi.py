"""The AsyncAPI document in schemas/: complete, self-consistent, true to the records the bridge
makes, and valid for the AsyncAPI parser (@asyncapi/parser, run offline with Node)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7, DRAFT202012

from bridge.config import (
    WEBHOOK_FAMILIES,
    AdminSettings,
    KafkaSettings,
    PollerSettings,
    TrackingSettings,
    TwimlSettings,
    WebhookSettings,
)
from bridge.contract.envelopes import request_adapter
from bridge.contract.events import CloudEvent, EventError, event_streams_events, webhook_event
from bridge.contract.twiml import awaiting, check_twiml
from bridge.inbound.polling.state import call_event, message_event
from bridge.tooling.asyncapi import ASYNCAPI_FILE, asyncapi_document, event_data_file, message_id
from bridge.tooling.local.cache import cache_dir, run_npm
from bridge.tooling.schemas import render_schemas
from tests.helpers import ACCOUNT, SCHEMAS

VALIDATOR = Path(__file__).with_name("asyncapi_validate.mjs")
PARSER_PACKAGE = "@asyncapi/parser@3.6.3"
DOC = asyncapi_document()

NOW = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _pointer(document: Any, fragment: str) -> Any:
    node = document
    for part in fragment.lstrip("/").split("/") if fragment else []:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _internal(channel: dict[str, Any]) -> bool:
    return channel.get("x-internal") is True


# ------------------------------------------------------------------------- completeness


def test_every_default_topic_is_a_channel_and_nothing_else() -> None:
    kafka, webhook, poller = KafkaSettings(), WebhookSettings(), PollerSettings()
    topics = {
        *kafka.request_topics,
        kafka.reply_topic,
        kafka.error_topic,
        *(webhook.topic_for(family) for family in WEBHOOK_FAMILIES),
        webhook.dedupe_topic,
        poller.state_topic,
        AdminSettings().topic,
        AdminSettings().audit_topic,
        TrackingSettings().topic,
        TrackingSettings().state_topic,
        TwimlSettings().topic,
    }
    addresses = [channel["address"] for channel in DOC["channels"].values()]
    assert sorted(addresses) == sorted(topics)
    for channel in DOC["channels"].values():
        assert channel["bindings"]["kafka"]["topic"] == channel["address"]
        assert channel["bindings"]["kafka"]["bindingVersion"] == "0.5.0"


def test_only_the_bookkeeping_topics_are_internal() -> None:
    internal = {c["address"] for c in DOC["channels"].values() if _internal(c)}
    assert internal == {
        WebhookSettings().dedupe_topic,
        PollerSettings().state_topic,
        AdminSettings().topic,
        TrackingSettings().state_topic,
    }
    for channel in DOC["channels"].values():
        assert ("tags" in channel) == _internal(channel)


def test_the_bridge_receives_requests_and_sends_the_rest() -> None:
    actions: dict[str, set[str]] = {}
    for operation in DOC["operations"].values():
        channel = _pointer(DOC, operation["channel"]["$ref"][1:])
        actions.setdefault(channel["address"], set()).add(operation["action"])
    kafka, webhook = KafkaSettings(), WebhookSettings()
    for topic in (*kafka.request_topics, TwimlSettings().topic):
        assert actions[topic] == {"receive"}
    for topic in (kafka.reply_topic, kafka.error_topic):
        assert actions[topic] == {"send"}
    for family in WEBHOOK_FAMILIES:
        assert actions[webhook.topic_for(family)] == {"send"}
    # The bridge writes its bookkeeping and reads it back.
    both = {"send", "receive"}
    assert actions[webhook.dedupe_topic] == actions[PollerSettings().state_topic] == both
    assert actions[TrackingSettings().state_topic] == both
    assert actions[TrackingSettings().topic] == {"send"}
    receive = DOC["operations"]["receiveRequests"]
    assert receive["reply"]["channel"] == {"$ref": "#/channels/replies"}


def test_every_family_has_its_message_headers_data_schema_and_example() -> None:
    messages = DOC["components"]["messages"]
    rendered = render_schemas()
    for family in WEBHOOK_FAMILIES:
        message = messages[message_id(family)]
        assert message["payload"]["schema"] == {"$ref": f"./{event_data_file(family)}"}
        assert event_data_file(family) in rendered
        assert message["headers"]["$ref"].endswith(message_id(family) + "Headers")
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        assert len(message["examples"]) == 1


def test_topics_follow_the_settings() -> None:
    doc = asyncapi_document(
        KafkaSettings(request_topics=["a.requests", "b.requests"], reply_topic="r"),
        WebhookSettings(topic_prefix="tw.", topics={"voice": "calls.in"}),
        PollerSettings(state_topic="st", partitions=3),
    )
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {"a.requests", "b.requests", "r", "tw.messages", "calls.in", "st"} <= addresses
    assert {"receiveRequests", "receiveRequests2"} <= set(doc["operations"])
    assert doc["channels"]["pollerState"]["bindings"]["kafka"]["partitions"] == 3


# ---------------------------------------------------------------------------- references


def test_every_ref_resolves_offline() -> None:
    files = {name: json.loads(text) for name, text in render_schemas().items()}
    for name, document in files.items():
        for ref in _refs(document):
            target, _, fragment = ref.partition("#")
            assert not target.startswith(("http:", "https:")), f"{name}: remote $ref {ref}"
            if target:
                assert name == ASYNCAPI_FILE, f"{name}: refers to another file: {ref}"
                assert target.startswith("./") and target[2:] in files, f"missing {ref}"
                assert (SCHEMAS / target).is_file(), f"{ref} is not in schemas/"
                _pointer(files[target[2:]], fragment)
            else:
                _pointer(document, fragment)


def test_operations_refer_to_their_channels_messages() -> None:
    for name, operation in DOC["operations"].items():
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), name
            _pointer(DOC, message["$ref"][1:])


# --------------------------------------------------------------- true to the bridge's records


def _registry() -> Registry[Any]:
    resources = [
        (f"file:{name}", Resource.from_contents(json.loads(text), DRAFT202012))
        for name, text in render_schemas().items()
        if name != ASYNCAPI_FILE
    ]
    doc = Resource.from_contents(DOC, default_specification=DRAFT7)
    return Registry().with_resources([*resources, ("urn:asyncapi", doc)])


REGISTRY = _registry()


def _payload_validator(message: str) -> jsonschema.Validator:
    payload = DOC["components"]["messages"][message]["payload"]
    if "schemaFormat" not in payload:  # an AsyncAPI Schema Object inline (TwiML: a string)
        return jsonschema.Draft7Validator(payload)
    file = payload["schema"]["$ref"][2:]
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / file).read_text()))


def _headers_validator(message: str) -> jsonschema.Draft7Validator:
    pointer = DOC["components"]["messages"][message]["headers"]["$ref"]
    return jsonschema.Draft7Validator(
        {"$ref": "urn:asyncapi" + pointer},
        registry=REGISTRY,
        format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
    )


def _check_event(family: str, event: CloudEvent) -> None:
    headers = {name: value.decode() for name, value in event.headers()}
    _headers_validator(message_id(family)).validate(headers)
    _payload_validator(message_id(family)).validate(orjson.loads(event.value()))
    if family != "event-streams":
        assert event.key == headers["ce_subject"].encode()


def test_every_example_matches_its_schemas() -> None:
    for name, message in DOC["components"]["messages"].items():
        for example in message.get("examples", []):
            if "headers" in example:
                _headers_validator(name).validate(example["headers"])
            _payload_validator(name).validate(example["payload"])
            if name == "request":
                request_adapter.validate_python(example["payload"])


def test_polled_states_match_their_family() -> None:
    base = {"account_sid": ACCOUNT, "from": "+14155552671", "to": "+15005550006"}
    resources: list[tuple[Callable[..., tuple[str, CloudEvent]], dict[str, Any]]] = [
        (message_event, {**base, "sid": "SM1", "status": "received", "direction": "inbound"}),
        (message_event, {**base, "sid": "SM2", "status": "failed", "error_code": 30003}),
        (call_event, {**base, "sid": "CA1", "status": "in-progress", "duration": None}),
    ]
    for convert, resource in resources:
        family, event = convert(resource, NOW)
        _check_event(family, event)


def test_awaited_events_and_answers_match() -> None:
    for family in ("voice", "messages"):
        sid = {"voice": "CallSid", "messages": "MessageSid"}[family]
        data = {"AccountSid": ACCOUNT, sid: "XX1"}
        event = webhook_event(family, data, idempotency_token="t", signed=b"", received=NOW)
        _check_event(family, awaiting(event, TwimlSettings().topic, NOW))
    answer = DOC["components"]["messages"]["twimlAnswer"]
    for example in answer["examples"]:
        check_twiml(example["payload"].encode(), TwimlSettings().max_bytes)
    doc = asyncapi_document(twiml=TwimlSettings(topic="ivr.answers"))
    assert doc["channels"]["twimlAnswers"]["address"] == "ivr.answers"


def test_event_streams_events_match() -> None:
    batch = [
        {"specversion": "1.0", "id": "EZ1", "source": "s", "type": "t", "data": {"callSid": "CA"}},
        {"specversion": "1.0", "id": "EZ2", "source": "s", "type": "t", "ext1": "x"},
    ]
    for event in event_streams_events(orjson.dumps(batch)):
        _check_event("event-streams", event)


@pytest.mark.parametrize(
    ("family", "data"),
    [
        ("messages", {"AccountSid": ACCOUNT, "MessageSid": "SM1"}),
        ("messages", {"AccountSid": ACCOUNT, "SmsSid": "SM1"}),
        ("messages", {"AccountSid": ACCOUNT, "MessageSid": " ", "SmsSid": "SM1"}),
        ("messages", {"AccountSid": [ACCOUNT, "x"], "MessageSid": "SM1", "MediaUrl0": "u"}),
        ("messages", {"AccountSid": ACCOUNT}),
        ("messages", {"MessageSid": "SM1"}),
        ("messages", {"AccountSid": "", "MessageSid": "SM1"}),
        ("messages", {"AccountSid": 7, "MessageSid": "SM1"}),
        ("message-status", {"AccountSid": ACCOUNT, "MessageSid": "SM1", "SmsStatus": "sent"}),
        ("message-status", {"AccountSid": ACCOUNT, "MessageSid": "SM1"}),
        ("voice", {"AccountSid": ACCOUNT, "CallSid": "CA1", "Digits": ["1", "2"]}),
        ("voice", {"AccountSid": ACCOUNT, "CallSid": []}),
        ("call-status", {"AccountSid": ACCOUNT, "CallSid": "CA1", "CallStatus": "in-progress"}),
        ("recording-status", {"AccountSid": ACCOUNT, "RecordingSid": "RE1"}),
        (
            "conference-status",
            {"AccountSid": ACCOUNT, "ConferenceSid": "CF1", "StatusCallbackEvent": "start"},
        ),
    ],
)
def test_data_schema_accepts_exactly_what_the_mapping_accepts(
    family: str, data: dict[str, Any]
) -> None:
    try:
        event = webhook_event(family, data, idempotency_token=None, signed=b"", received=NOW)
    except EventError:
        assert not _payload_validator(message_id(family)).is_valid(data)
    else:
        _check_event(family, event)


# ------------------------------------------------------------------------------ the parser


@pytest.fixture(scope="session")
def parser_modules() -> Path:
    """A directory whose node_modules holds @asyncapi/parser, installed into the cache once."""
    target = cache_dir() / ("asyncapi-parser-" + PARSER_PACKAGE.rsplit("@", 1)[1])
    marker = target / "node_modules" / "@asyncapi" / "parser" / "package.json"
    if marker.exists():
        return target
    tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".asyncapi-parser-"))
    try:
        # An own package.json keeps npm from walking up to some enclosing project; no install
        # scripts: the only one in the tree is a usage-analytics beacon (@scarf/scarf).
        (tmp / "package.json").write_text('{"private": true}\n')
        args = ["install", "--no-audit", "--no-fund", "--ignore-scripts", PARSER_PACKAGE]
        run_npm(args, cwd=tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not marker.exists():  # else another process installed it first: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _parse(modules: Path, document: Path) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed to validate the AsyncAPI document"
    done = subprocess.run(
        [node, str(VALIDATOR), str(modules), str(document)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_parser_finds_no_error_in_the_committed_document(parser_modules: Path) -> None:
    result = _parse(parser_modules, SCHEMAS / ASYNCAPI_FILE)
    assert result["remote"] == [], "the document must not need the network"
    errors = [d for d in result["diagnostics"] if d["severity"] == "error"]
    for diagnostic in result["diagnostics"]:
        if diagnostic not in errors:
            print(
                f"asyncapi {diagnostic['severity']}: {diagnostic['code']}: "
                f"{diagnostic['message']} at {diagnostic['path']}"
            )
    assert not errors, json.dumps(errors, indent=1)


def test_the_parser_check_is_not_vacuous(parser_modules: Path, tmp_path: Path) -> None:
    for name, text in render_schemas().items():
        (tmp_path / name).write_text(text)
    broken = json.loads(json.dumps(DOC))
    messages = broken["components"]["messages"]
    messages["request"]["payload"]["schema"]["$ref"] = "./missing.schema.json"
    messages["reply"]["bindings"]["kafka"]["keyy"] = {"type": "string"}
    messages["errorRecord"]["payload"]["schema"]["$ref"] = "https://example.com/x.json"
    broken["operations"]["sendReplies"]["messages"] = [
        {"$ref": "#/channels/errors/messages/errorRecord"}
    ]
    (tmp_path / ASYNCAPI_FILE).write_text(json.dumps(broken))
    result = _parse(parser_modules, tmp_path / ASYNCAPI_FILE)
    errors = {(d["code"], d["path"]) for d in result["diagnostics"] if d["severity"] == "error"}
    assert ("invalid-ref", "components/messages/request/payload/schema/$ref") in errors
    assert any(path == "components/messages/reply/bindings/kafka/keyy" for _, path in errors)
    assert any(path == "operations/sendReplies/messages/0" for _, path in errors)
    assert result["remote"] == ["https://example.com/x.json"]
