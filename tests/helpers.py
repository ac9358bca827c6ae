"""What many tests share: the project's root, test credentials, instances, the outbound
processor over a recording Twilio stand-in, a recording event delivery, and a stand-in for
aiokafka's consumer, a made-up Twilio API spec (for specs added at run time), and the ids of
recorded spans.

Values here are arbitrary but well formed; a test that needs a particular value defines its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, cast

import httpx
import jsonschema
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from opentelemetry.sdk.trace import ReadableSpan
from pydantic import SecretStr

from bridge.config import Credential, TwilioSettings
from bridge.contract.events import CloudEvent
from bridge.inbound.delivery import EventDelivery
from bridge.instances.model import Instance
from bridge.kafka.producer import Headers, Publisher
from bridge.kafka.records import Record
from bridge.outbound.idempotency.index import Answered, IdempotencyIndex, Prior, digest
from bridge.outbound.processor import Processor
from bridge.twilio.accounts import Account, Accounts
from bridge.twilio.calls import CallBuilder, TwilioCall
from bridge.twilio.catalog import Catalog
from bridge.twilio.client import TwilioClient
from bridge.twilio.responses import HttpResult
from bridge.twilio.retry import RetryPolicy

__all__ = [
    "ACCOUNT",
    "API_KEY_SECRET",
    "API_KEY_SID",
    "AUTH_TOKEN",
    "CALL",
    "CHART",
    "CREATED",
    "CREATED_MESSAGE",
    "CREDENTIALS",
    "ENVELOPE",
    "FAST_RETRIES",
    "FETCH_MESSAGE",
    "INSTANCE_ACCOUNT",
    "INSTANCE_AUTH_TOKEN",
    "JSON",
    "ONE_ATTEMPT",
    "PATH",
    "README",
    "ROOT",
    "SCHEMAS",
    "SERVER_ERROR",
    "TOO_MANY",
    "TWILIO_SETTINGS",
    "WIDGET_SID",
    "Answer",
    "FakeConsumer",
    "MemoryIdempotencyStore",
    "RecordingDelivery",
    "RecordingPublisher",
    "RecordingTwilio",
    "TwilioHandler",
    "answering",
    "answering_in_turn",
    "consumed",
    "instance_spec",
    "outbound_processor",
    "parent_of",
    "request_record",
    "result",
    "span_ids",
    "schema_validator",
    "stored_instance",
    "traceparent_of",
    "widgets_spec",
]

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
CHART = ROOT / "helm" / "twilio-kafka-bridge"
README = ROOT / "README.md"


def schema_validator(file: str) -> jsonschema.protocols.Validator:
    """A validator for ``schemas/FILE``, its schema checked once: ``jsonschema.validate``
    checks the schema on every call, ~35 ms each for the reply schema (50 s for the catalog)."""
    schema = json.loads((SCHEMAS / file).read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


# --- credentials ---------------------------------------------------------------------------

# Test account SIDs: any 32 hex digits will do; an instance's differs from the settings' one.
ACCOUNT = "AC" + "0" * 32
INSTANCE_ACCOUNT = "AC" + "c" * 32
API_KEY_SID = "SK" + "b" * 32
# Secrets: distinctive, so a test can look for them where they must not appear.
AUTH_TOKEN = "test-auth-token-not-a-secret-value"
INSTANCE_AUTH_TOKEN = "tok-SUPERSECRET-7f3a9c"
API_KEY_SECRET = "key-SUPERSECRET-41d2e8"
CREDENTIALS = {"default": Credential(account_sid=ACCOUNT, auth_token=SecretStr(AUTH_TOKEN))}

# --- instances -----------------------------------------------------------------------------


def instance_spec(name: str = "acme", **configuration: Any) -> dict[str, Any]:
    """An instance document as the admin API takes it: ``INSTANCE_ACCOUNT``, its token, a tag."""
    return {
        "name": name,
        "configuration": {
            "account_sid": INSTANCE_ACCOUNT,
            "auth_token": INSTANCE_AUTH_TOKEN,
            **configuration,
        },
        "tags": ["eu"],
    }


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


@dataclass
class FakeConsumer:
    """aiokafka's consumer, for the Kafka adapter's unit tests: ``records`` come in one fetch,
    each call named in ``failures`` raises what it holds (the first in its list, once)."""

    records: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    assigned: set[TopicPartition] = field(default_factory=set)
    listener: Any = None
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.failures.get(name):
            raise self.failures[name].pop(0)

    async def start(self) -> None:
        self._call("start")

    async def stop(self) -> None:
        self._call("stop")

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self._call("subscribe")
        self.listener = listener

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = set(partitions)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.ends if tp.topic == topic}

    @property
    def _client(self) -> SimpleNamespace:
        """aiokafka's consumer has no metadata refresh of its own; its client has."""
        return SimpleNamespace(force_metadata_update=self.refresh_metadata)

    async def refresh_metadata(self) -> None:
        self._call("force_metadata_update")

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.seeks += [(tp, 0) for tp in tps]

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self._call("end_offsets")
        return {tp: self.ends.get(tp, 0) for tp in tps}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    async def committed(self, tp: TopicPartition) -> int | None:
        return None

    async def position(self, tp: TopicPartition) -> int:
        self._call("position")
        return self.positions.get(tp, 0)

    async def getmany(
        self, *_: TopicPartition, max_records: int | None = None, **__: Any
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        self._call("getmany")
        if not self.records:
            await asyncio.sleep(0.01)  # as a fetch waits for records that do not come
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        count = len(self.records) if max_records is None else max_records
        taken, self.records = self.records[:count], self.records[count:]
        for record in taken:
            batch.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        return batch


def consumed(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> ConsumerRecord[bytes, bytes]:
    """A record as aiokafka's consumer hands it over."""
    return ConsumerRecord(
        topic, partition, offset, 1_000, 0, key, value, None, 0, 0, [("state", b"x")]
    )


def use_fake_consumer(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, consumer: FakeConsumer
) -> FakeConsumer:
    """Make ``module`` (of ``bridge.kafka``) create ``consumer`` instead of aiokafka's, and
    find every topic it creates already there."""

    async def topic_exists(*_: Any, **__: Any) -> None:
        pass

    monkeypatch.setattr(module, "AIOKafkaConsumer", lambda **_: consumer)
    if hasattr(module, "create_topic"):
        monkeypatch.setattr(module, "create_topic", topic_exists)
    return consumer


# --- the outbound processor over a recording Twilio stand-in -------------------------------

# The httpx transport, so that an ``httpx.MockTransport`` can stand in for Twilio.
TWILIO_SETTINGS = TwilioSettings(transport="httpx")
# One attempt: a test of how an answer is classified looks at that answer alone.
ONE_ATTEMPT = RetryPolicy(max_attempts=1)
# A basic CreateMessage with a list field, metadata and a parameter the operation does not take.
ENVELOPE: dict[str, Any] = {
    "id": "order-78456-sms",
    "mode": "basic",
    "operation": "CreateMessage",
    "params": {"Extra": "x"},
    "body": {
        "From": "+14155552671",
        "To": "+919876543210",
        "Body": "Your order has shipped",
        "MediaUrl": ["https://demo.twilio.com/owl.png"],
    },
    "metadata": {"order": "ORD-78456", "n": [1, 2]},
}
# Twilio's answer to a created message (the part the tests look at).
CREATED_MESSAGE = {"sid": "SM" + "1" * 32, "status": "queued"}


class RecordingTwilio:
    """A handler for ``httpx.MockTransport``: answers with ``answer`` and keeps each request."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.answer(request)


def answering(status: int, body: Any = None, **headers: str) -> RecordingTwilio:
    """Twilio answering every request with ``status``, ``body`` as JSON (if any), ``headers``."""

    def answer(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return RecordingTwilio(answer)


def request_record(
    value: bytes | dict[str, Any] | None, headers: tuple[tuple[str, bytes], ...] = ()
) -> Record:
    """A record of the request topic holding ``value`` (a dict is sent as JSON)."""
    raw = json.dumps(value).encode() if isinstance(value, dict) else value
    return Record(
        topic="twilio.requests",
        partition=3,
        offset=42,
        key=b"order-78456",
        value=raw,
        headers=headers,
        timestamp_ms=1_700_000_000,
    )


# What ``httpx.MockTransport`` takes: a function from request to answer, or a coroutine one.
TwilioHandler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


def outbound_processor(
    twilio: TwilioHandler,
    policy: RetryPolicy = ONE_ATTEMPT,
    accounts: Accounts | None = None,
    **options: Any,
) -> Processor:
    """The processor calling ``twilio`` with ``CREDENTIALS`` (or ``accounts``) and ``options``.

    Its client holds no connection (a mock transport), so nothing needs closing.
    """
    client = TwilioClient(TWILIO_SETTINGS, transport=httpx.MockTransport(twilio))
    accounts = accounts if accounts is not None else Accounts(CREDENTIALS)
    builder = CallBuilder(Catalog.load(), accounts, TWILIO_SETTINGS)
    return Processor(builder, client, policy, **options)


class MemoryIdempotencyStore:
    """Outcomes in memory, with ``IdempotencyLog``'s contract (the processor's ``idempotency``)."""

    def __init__(self) -> None:
        self.index = IdempotencyIndex(3600)
        self.replies: dict[int, bytes] = {}
        self.running: dict[str, asyncio.Event] = {}
        self.now = 1000.0

    async def check(self, request_id: str, partition: int) -> Prior | None:
        while (running := self.running.get(request_id)) is not None:
            await running.wait()
        return self.index.prior(request_id, self.now)

    async def begin(self, request_id: str, partition: int) -> None:
        self.running[request_id] = asyncio.Event()
        self.index.record_started(digest(request_id), self.now)

    def finish(self, request_id: str, reply: bytes, partition: int) -> asyncio.Future[None]:
        offset = len(self.replies)
        self.replies[offset] = reply
        self.index.record_answered(digest(request_id), self.now, 0, offset)
        self.release(request_id)
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        written.set_result(None)
        return written

    def release(self, request_id: str) -> None:
        running = self.running.pop(request_id, None)
        if running is not None:
            running.set()

    async def first_reply(self, request_id: str, answered: Answered) -> bytes | None:
        return self.replies.get(answered.offset)


# --- inbound -------------------------------------------------------------------------------


class RecordingDelivery(EventDelivery):
    """Kafka stand-in for the webhook receiver: keeps the events, acknowledges as told."""

    def __init__(self, acknowledge: bool = True) -> None:
        super().__init__(cast(Publisher, None), None, 1.0)
        self.acknowledge = acknowledge
        self.events: list[tuple[str, CloudEvent]] = []
        self.delivered = asyncio.Event()

    async def deliver(self, events: Sequence[tuple[str, CloudEvent]]) -> bool:
        self.events += events
        self.delivered.set()
        return self.acknowledge


class RecordingPublisher(Publisher):
    """Kafka stand-in for a publisher: keeps each record, acknowledged at once (at its index
    among those kept) or, when ``held``, once ``ack`` is set."""

    def __init__(self, held: bool = False) -> None:
        # No producer: nothing here connects (the base class's state is never used).
        self.sent: list[tuple[str, bytes | None, bytes | None, Headers, int | None]] = []
        self.ack = asyncio.Event()
        if not held:
            self.ack.set()

    async def publish(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> tuple[int, int]:
        self.sent.append((topic, key, value, list(headers), partition))
        offset = len(self.sent) - 1
        await self.ack.wait()
        return partition or 0, offset


# --- answers in turn, for retries ----------------------------------------------------------

FAST_RETRIES = RetryPolicy(max_attempts=3, base_delay_s=0, max_delay_s=0)


Answer = tuple[int, dict[str, Any], dict[str, str]]


def answering_in_turn(*answers: Answer | type[httpx.RequestError]) -> RecordingTwilio:
    """Answers in the given order, the last one from then on."""
    queue = list(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        current = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(current, type):
            raise current("simulated", request=request)
        status, body, headers = current
        return httpx.Response(status, json=body, headers=headers)

    return RecordingTwilio(answer)


TOO_MANY: Answer = (429, {"code": 20429, "message": "Too Many Requests", "status": 429}, {})
SERVER_ERROR: Answer = (503, {"code": 20503, "message": "Service Unavailable", "status": 503}, {})
CREATED: Answer = (201, {"sid": "SM1"}, {})
FETCH_MESSAGE = {
    "id": "req-get",
    "mode": "basic",
    "operation": "FetchMessage",
    "params": {"Sid": "SM1"},
}


# --- a call and Twilio's answers, as the client returns them ----------------------------------

PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
# A sent CreateMessage call and Twilio's answers to it, for the reply and paging tests.
CALL = TwilioCall(
    method="POST",
    url="https://api.twilio.com" + PATH,
    path=PATH,
    account=Account.from_settings(
        "default",
        Credential(account_sid=ACCOUNT, auth_token=SecretStr("t" * 32)),
        calls=False,
    ),
    content=b"To=%2B1",
    api="api.v2010",
    operation="CreateMessage",
    warnings=("body.Bogus: not in the spec of CreateMessage, sent anyway",),
    template="/2010-04-01/Accounts/{AccountSid}/Messages.json",
)
JSON = "application/json; charset=utf-8"


def result(
    status: int,
    body: Any = None,
    *,
    content_type: str | None = JSON,
    raw: bytes | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> HttpResult:
    content = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    all_headers = headers + ((("Content-Type", content_type),) if content_type else ())
    return HttpResult(
        status=status, headers=all_headers, content=content, content_type=content_type
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


# --- recorded spans --------------------------------------------------------------------------


def span_ids(span: ReadableSpan) -> tuple[str, str]:
    """(trace id, span id) of a recorded span, in hex as a ``traceparent`` has them."""
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def parent_of(span: ReadableSpan) -> str | None:
    """The span id of a recorded span's parent, in hex; None for a root."""
    return None if span.parent is None else f"{span.parent.span_id:016x}"


def traceparent_of(span: ReadableSpan) -> str:
    """The W3C ``traceparent`` naming a recorded span (its flags as the SDK set them)."""
    assert span.context is not None
    trace_id, span_id = span_ids(span)
    return f"00-{trace_id}-{span_id}-{span.context.trace_flags:02x}"
