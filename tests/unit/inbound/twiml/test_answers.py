"""Waiting for TwiML answers (``bridge.inbound.twiml.answers``), Kafka replaced by recorders.

The delivery acknowledges (or not) as told and reports each event's place like the real one;
answers are handed to ``read`` as the topic tail would. The real broker is in
``tests/integration/test_twiml.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bridge.config import KafkaSettings, TwimlSettings
from bridge.contract.events import CloudEvent, webhook_event
from bridge.contract.twiml import DEFAULT_FALLBACKS
from bridge.inbound.delivery import EventDelivery
from bridge.inbound.twiml import answers as answers_module
from bridge.inbound.twiml.answers import TwimlAnswers
from bridge.kafka.producer import Publisher
from bridge.kafka.records import Record
from bridge.observability.metrics import REGISTRY
from bridge.observability.tracing import tracer
from tests.helpers import ACCOUNT

SAY = b"<Response><Say>Hello</Say></Response>"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Recorder:
    """A publisher that keeps what it is given (the error records)."""

    max_record_bytes = 1_000_000

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    async def publish(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        partition: Any = None,
    ) -> tuple[int, int]:
        self.sent.append((topic, key, value, headers))
        return 0, len(self.sent)


class Delivery(EventDelivery):
    """Acknowledges when told, reporting each event at partition 3 as the real one does."""

    def __init__(self, answers: TwimlAnswers, acknowledge: bool = True) -> None:
        super().__init__(cast(Publisher, None), None, 1.0, on_published=answers.published)
        self.answers = answers
        self.acknowledge = acknowledge
        self.published: list[tuple[str, CloudEvent]] = []
        self.answer_first: bytes | None = None  # the service answers before the ack arrives

    async def deliver(self, events: Sequence[tuple[str, CloudEvent]]) -> bool:
        await asyncio.sleep(0)
        if not self.acknowledge:
            return False
        for topic, event in events:
            self.published.append((topic, event))
            if self.answer_first is not None:
                self.answers.read(answer(event.id, self.answer_first))
            self.answers.published(topic, event, 3, 41 + len(self.published))
        return True


def answer(event_id: str, value: bytes, offset: int = 7) -> Record:
    return Record("twilio.twiml", 0, offset, event_id.encode(), value, (), 1_700_000_000_000)


def call(token: str = "tok-1", call_sid: str = "CA1") -> CloudEvent:
    return webhook_event(
        "voice",
        {"AccountSid": ACCOUNT, "CallSid": call_sid, "From": "+14155550100"},
        idempotency_token=token,
        signed=b"",
        received=NOW,
    )


def make(published: Any = None, **settings: Any) -> tuple[TwimlAnswers, Recorder, Delivery]:
    recorder = Recorder()
    twiml = TwimlSettings.model_validate({"families": ["voice"], "timeout_s": 2, **settings})
    answers = TwimlAnswers(twiml, KafkaSettings(), cast(Publisher, recorder), published=published)
    return answers, recorder, Delivery(answers)


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def respond_soon(answers: TwimlAnswers, delivery: Delivery, event: CloudEvent) -> Any:
    task = asyncio.create_task(answers.respond("voice", "ev.voice", event, delivery))
    for _ in range(10):  # until it published and waits
        await asyncio.sleep(0)
    return task


async def test_the_answer_for_the_event_id_is_the_webhooks_answer() -> None:
    answers, _, delivery = make()
    before = count("twilio_bridge_twiml_answers_total", family="voice", outcome="answered")
    task = await respond_soon(answers, delivery, call())
    answers.read(answer("other-id", b"<Response><Reject/></Response>"))
    answers.read(answer("tok-1", SAY))
    assert await task == SAY.decode()
    [(topic, event)] = delivery.published
    assert topic == "ev.voice"
    after = count("twilio_bridge_twiml_answers_total", family="voice", outcome="answered")
    assert after == before + 1


async def test_the_wait_is_an_event_of_the_webhooks_span(spans: InMemorySpanExporter) -> None:
    answers, _, delivery = make()
    with tracer().server("POST /webhooks/twilio/{family}", {}, {}):
        task = await respond_soon(answers, delivery, call())
        answers.read(answer("tok-1", SAY))
        assert await task == SAY.decode()
    [span] = spans.get_finished_spans()
    [event] = span.events
    assert event.name == "twiml answer: answered"
    waited = (event.attributes or {})["twilio.wait_ms"]
    assert isinstance(waited, float) and waited >= 0


async def test_the_event_says_where_and_until_when_the_answer_is_awaited() -> None:
    answers, _, delivery = make(topic="ivr.answers", timeout_s=8)
    task = await respond_soon(answers, delivery, call())
    [(_, event)] = delivery.published
    headers = dict(event.headers())
    assert headers["ce_twimlreplyto"] == b"ivr.answers"
    deadline = datetime.fromisoformat(headers["ce_twimldeadline"].decode())
    assert 7 < (deadline - datetime.now(UTC)).total_seconds() <= 8
    answers.read(answer("tok-1", SAY))
    await task


async def test_an_answer_read_before_the_acknowledgement_is_not_missed() -> None:
    answers, _, delivery = make()
    delivery.answer_first = SAY
    assert await answers.respond("voice", "ev.voice", call(), delivery) == SAY.decode()


async def test_no_answer_in_time_is_the_fallback_and_an_error_record_naming_the_event() -> None:
    answers, recorder, delivery = make(timeout_s=0.05)
    assert (
        await answers.respond("voice", "ev.voice", call(), delivery) == DEFAULT_FALLBACKS["voice"]
    )
    await asyncio.sleep(0)
    [(topic, key, value, headers)] = recorder.sent
    assert value is not None
    record = json.loads(value)
    assert topic == KafkaSettings().error_topic and key == b"tok-1"
    assert dict(headers) == {"id": b"tok-1", "kind": b"timeout"}
    assert record["id"] == "tok-1" and record["error"]["kind"] == "timeout"
    assert "0.05 s" in record["error"]["message"]
    # The source is the event that got no answer: its topic, partition, offset and key.
    assert record["source"] == {
        "topic": "ev.voice",
        "partition": 3,
        "offset": 42,
        "key": base64.b64encode(b"CA1").decode(),
        "timestamp_ms": None,
    }


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"<Response><Say>unclosed</Response>", "not well-formed"),
        (b"<Say>no response</Say>", "root element"),
        (b"<Response>" + b" " * 2000 + b"</Response>", "over the limit"),
    ],
)
async def test_a_bad_answer_is_the_fallback_and_an_error_record_with_the_answer(
    value: bytes, reason: str
) -> None:
    answers, recorder, delivery = make(max_bytes=1024)
    task = await respond_soon(answers, delivery, call())
    answers.read(answer("tok-1", value, offset=99))
    assert await task == DEFAULT_FALLBACKS["voice"]
    await asyncio.sleep(0)
    [(_, key, record_value, headers)] = recorder.sent
    assert record_value is not None
    record = json.loads(record_value)
    assert key == b"tok-1" and dict(headers)["kind"] == b"validation"
    assert reason in record["error"]["message"]
    assert record["source"]["topic"] == "twilio.twiml" and record["source"]["offset"] == 99
    kept = base64.b64decode(record["raw"]) if record["raw"] is not None else None
    assert kept == (value if len(value) <= 1024 else None)


async def test_kafka_not_acknowledging_awaits_nothing() -> None:
    answers, recorder, delivery = make()
    delivery.acknowledge = False
    assert await answers.respond("voice", "ev.voice", call(), delivery) is None
    assert count("twilio_bridge_twiml_waiting") == 0
    # The publish may still land and be answered: Twilio's retry then gets that answer.
    answers.read(answer("tok-1", SAY))
    delivery.acknowledge = True
    assert await answers.respond("voice", "ev.voice", call(), delivery) == SAY.decode()
    assert delivery.published == [] and recorder.sent == []


async def test_twilios_retry_while_waiting_gets_the_same_answer_from_one_event() -> None:
    answers, _, delivery = make()
    first = await respond_soon(answers, delivery, call())
    retry = await respond_soon(answers, delivery, call())
    assert count("twilio_bridge_twiml_waiting") == 1
    answers.read(answer("tok-1", SAY))
    assert await first == await retry == SAY.decode()
    assert len(delivery.published) == 1


async def test_a_retry_after_the_answer_gets_it_again_without_publishing() -> None:
    answers, _, delivery = make()
    task = await respond_soon(answers, delivery, call())
    answers.read(answer("tok-1", SAY))
    await task
    assert await answers.respond("voice", "ev.voice", call(), delivery) == SAY.decode()
    assert len(delivery.published) == 1


async def test_a_late_answer_is_dropped_and_never_reaches_a_later_call() -> None:
    answers, _, delivery = make(timeout_s=0.05)
    late = count("twilio_bridge_twiml_dropped_total", reason="late")
    fallback = DEFAULT_FALLBACKS["voice"]
    assert await answers.respond("voice", "ev.voice", call(), delivery) == fallback
    answers.read(answer("tok-1", SAY))
    assert count("twilio_bridge_twiml_dropped_total", reason="late") == late + 1
    # The retry keeps the fallback it settled to; the next call waits for its own answer.
    assert await answers.respond("voice", "ev.voice", call(), delivery) == fallback
    assert await answers.respond("voice", "ev.voice", call("tok-2", "CA2"), delivery) == fallback


async def test_a_second_answer_is_dropped_as_repeated() -> None:
    answers, _, delivery = make()
    repeated = count("twilio_bridge_twiml_dropped_total", reason="repeated")
    task = await respond_soon(answers, delivery, call())
    answers.read(answer("tok-1", SAY))
    answers.read(answer("tok-1", b"<Response><Reject/></Response>"))
    assert await task == SAY.decode()
    assert count("twilio_bridge_twiml_dropped_total", reason="repeated") == repeated + 1


async def test_an_answer_held_by_another_replica_serves_a_retry_sent_here() -> None:
    answers, _, delivery = make()
    answers.read(answer("tok-1", SAY))
    assert await answers.respond("voice", "ev.voice", call(), delivery) == SAY.decode()
    assert delivery.published == []


async def test_answers_for_ids_no_replica_published_are_counted_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(answers_module, "UNKNOWN_AFTER_S", 0.01)
    published = {"tok-elsewhere"}
    answers, _, _ = make(published=published.__contains__)
    unknown = count("twilio_bridge_twiml_dropped_total", reason="unknown")
    answers.read(answer("tok-elsewhere", SAY))  # another replica's: not counted
    answers.read(answer("CA-wrong-key", SAY))
    await asyncio.sleep(0.05)
    assert count("twilio_bridge_twiml_dropped_total", reason="unknown") == unknown + 1


async def test_without_the_redelivery_window_nothing_is_counted_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(answers_module, "UNKNOWN_AFTER_S", 0.01)
    answers, _, _ = make(published=None)
    unknown = count("twilio_bridge_twiml_dropped_total", reason="unknown")
    answers.read(answer("anything", SAY))
    await asyncio.sleep(0.05)
    assert count("twilio_bridge_twiml_dropped_total", reason="unknown") == unknown


async def test_a_webhook_that_goes_away_leaves_the_answer_to_its_retry() -> None:
    answers, _, delivery = make()
    task = await respond_soon(answers, delivery, call())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert count("twilio_bridge_twiml_waiting") == 0
    answers.read(answer("tok-1", SAY))
    assert await answers.respond("voice", "ev.voice", call(), delivery) == SAY.decode()


async def test_each_family_gets_its_own_fallback() -> None:
    answers, _, delivery = make(
        families=["voice", "messages"],
        timeout_s=0.05,
        fallback={"messages": "<Response><Message>Back soon</Message></Response>"},
    )
    sms = webhook_event(
        "messages",
        {"AccountSid": ACCOUNT, "MessageSid": "SM1"},
        idempotency_token="tok-sms",
        signed=b"",
        received=NOW,
    )
    got = await answers.respond("messages", "ev.messages", sms, delivery)
    assert got == "<Response><Message>Back soon</Message></Response>"
    assert (
        await answers.respond("voice", "ev.voice", call(), delivery) == DEFAULT_FALLBACKS["voice"]
    )
