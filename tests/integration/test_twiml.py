"""Calls and messages answered with TwiML from Kafka: the real bridge process, Tansu, webhooks
signed by Twilio's own validator, and a responder service written here with aiokafka.

The responder reads the events that carry ``twimlreplyto`` and answers on that topic, keyed by
the event's ``ce_id``, as README's example does. Deadlines are short (2 s) to keep this fast.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from twilio.request_validator import RequestValidator

from bridge.config import WEBHOOK_FAMILIES
from bridge.contract.twiml import DEFAULT_FALLBACKS
from bridge.tooling.local.tansu import TansuBroker, create_topics
from tests.helpers import ACCOUNT, AUTH_TOKEN, ROOT
from tests.support.harness import BridgeProcess, Topics, collect

SIGNER = RequestValidator(AUTH_TOKEN)
TIMEOUT_S = 2.0
FALLBACK = DEFAULT_FALLBACKS["voice"]
# (delay in seconds, TwiML) for an event's headers and data; None: no answer.
Plan = Callable[[dict[str, str], dict[str, Any]], tuple[float, bytes] | None]


def say_call_sid(headers: dict[str, str], data: dict[str, Any]) -> tuple[float, bytes] | None:
    return 0.0, f"<Response><Say>Hello {data['CallSid']}</Say></Response>".encode()


class Responder:
    """The service behind the bridge: answers each awaited event as ``plan`` says."""

    def __init__(self, bootstrap: str, topics: list[str], plan: Plan) -> None:
        self.bootstrap, self.topics, self.plan = bootstrap, topics, plan
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        self.seen: list[dict[str, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Responder:
        await self.consumer.start()
        await self.producer.start()
        partitions = [TopicPartition(t, 0) for t in self.topics]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)  # only what the test sends from now on
        self._tasks.add(asyncio.create_task(self._run()))
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.consumer.stop()
        await self.producer.stop()

    async def _run(self) -> None:
        async for record in self.consumer:
            headers = {k: v.decode() for k, v in record.headers}
            self.seen.append(headers)
            plan = self.plan(headers, json.loads(record.value))
            if "ce_twimlreplyto" in headers and plan is not None:
                task = asyncio.create_task(self._answer(headers, *plan))
                self._tasks.add(task)

    async def _answer(self, headers: dict[str, str], delay_s: float, twiml: bytes) -> None:
        await asyncio.sleep(delay_s)
        await self.producer.send_and_wait(
            headers["ce_twimlreplyto"],
            twiml,
            key=headers["ce_id"].encode(),
            headers=[("content-type", b"application/xml")],
        )


class Bridge:
    """A running bridge process answering voice and messages webhooks from Kafka."""

    def __init__(self, process: BridgeProcess, prefix: str, twiml_topic: str) -> None:
        self.process, self.prefix, self.twiml_topic = process, prefix, twiml_topic
        self.http = httpx.AsyncClient(base_url=process.http_url, timeout=30)

    @property
    def bootstrap(self) -> str:
        return self.process.bootstrap

    def topic(self, family: str) -> str:
        return self.prefix + family

    async def post(self, family: str, params: dict[str, str], token: str) -> httpx.Response:
        """A webhook signed as Twilio signs it, with its idempotency token."""
        params = {"AccountSid": ACCOUNT, "ApiVersion": "2010-04-01", **params}
        url = f"{self.process.http_url}/webhooks/twilio/{family}"
        return await self.http.post(
            url,
            content=urlencode(params),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "x-twilio-signature": SIGNER.compute_signature(url, params),
                "i-twilio-idempotency-token": token,
            },
        )

    async def call(self, call_sid: str, token: str | None = None) -> httpx.Response:
        return await self.post(
            "voice", {"CallSid": call_sid, "From": "+14155550100"}, token or call_sid
        )

    async def metric(self, name: str, **labels: str) -> float:
        text = (await self.http.get("/metrics")).text
        wanted = name + (
            "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
        )
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    async def close(self) -> None:
        await self.http.aclose()
        assert self.process.stop() == 0, self.process.log()[-3000:]


async def _start(bootstrap: str, log_path: Path, topics: Topics, **env: str) -> Bridge:
    prefix, twiml_topic = f"ev-{topics.group}.", f"twiml-{topics.group}"
    process = BridgeProcess(
        bootstrap,
        "http://127.0.0.1:9",  # outbound is not used here
        topics,
        log_path,
        {
            "BRIDGE_WEBHOOK__TOPIC_PREFIX": prefix,
            "BRIDGE_TWIML__FAMILIES": "voice,messages",
            "BRIDGE_TWIML__TOPIC": twiml_topic,
            "BRIDGE_TWIML__TIMEOUT_S": str(TIMEOUT_S),
            **env,
        },
    ).start()
    await process.wait_ready()
    return Bridge(process, prefix, twiml_topic)


async def _fresh_topics(bootstrap: str, twiml_partitions: int = 1) -> Topics:
    topics = Topics.fresh()
    await topics.create(bootstrap)
    await create_topics(bootstrap, [f"ev-{topics.group}.{family}" for family in WEBHOOK_FAMILIES])
    await create_topics(bootstrap, [f"twiml-{topics.group}"], partitions=twiml_partitions)
    return topics


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bridge(tansu: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bridge]:
    """One bridge for the tests that need only one: each uses its own call SIDs and tokens."""
    bootstrap = tansu.bootstrap_servers
    topics = await _fresh_topics(bootstrap, twiml_partitions=3)
    started = await _start(bootstrap, tmp_path_factory.mktemp("twiml") / "bridge.log", topics)
    yield started
    await started.close()


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


async def test_a_call_is_answered_with_the_responders_say_for_that_call(bridge: Bridge) -> None:
    async with Responder(bridge.bootstrap, [bridge.topic("voice")], say_call_sid) as responder:
        sids = [_sid("CA") for _ in range(4)]
        answers = await asyncio.gather(*(bridge.call(sid) for sid in sids))
    for sid, answer in zip(sids, answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "text/xml; charset=utf-8"
        assert answer.text == f"<Response><Say>Hello {sid}</Say></Response>"
    # What the responder saw: where to answer, and until when.
    for headers in responder.seen:
        assert headers["ce_twimlreplyto"] == bridge.twiml_topic
        assert headers["ce_twimldeadline"].endswith("Z")


def readme_responder(bootstrap: str, topic: str, group: str) -> str:
    """README's responder, pointed at this test's broker, topic and group."""
    section = (ROOT / "README.md").read_text().split("## Answering calls and messages", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    for default, ours in (
        ('"localhost:9092"', f'"{bootstrap}"'),
        ('"twilio.events.voice"', f'"{topic}"'),
        ('group_id="ivr"', f'group_id="{group}"'),
    ):
        assert default in code, default
        code = code.replace(default, ours)
    return code


async def test_the_readme_responder_answers_calls(bridge: Bridge, tmp_path: Path) -> None:
    code = readme_responder(bridge.bootstrap, bridge.topic("voice"), f"ivr-{uuid.uuid4().hex}")
    log_path = tmp_path / "responder.log"
    with log_path.open("wb") as log:
        responder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=log, stderr=log
        )
    try:
        # Until its consumer group has joined, calls get the fallback: poll with a deadline.
        deadline = time.monotonic() + 45
        answer = await bridge.call(_sid("CA"))
        while answer.text == FALLBACK and time.monotonic() < deadline:
            assert responder.returncode is None, log_path.read_text()
            answer = await bridge.call(_sid("CA"))
    finally:
        responder.terminate()
        await responder.wait()
    assert (
        answer.text == "<Response><Say>Hello! You are calling from +14155550100.</Say></Response>"
    )


async def test_an_inbound_sms_is_answered_with_a_message(bridge: Bridge) -> None:
    def reply(_: dict[str, str], data: dict[str, Any]) -> tuple[float, bytes]:
        return 0.0, f"<Response><Message>You said: {data['Body']}</Message></Response>".encode()

    async with Responder(bridge.bootstrap, [bridge.topic("messages")], reply):
        sid = _sid("SM")
        answer = await bridge.post("messages", {"MessageSid": sid, "Body": "hours?"}, sid)
    assert answer.status_code == 200, answer.text
    assert answer.text == "<Response><Message>You said: hours?</Message></Response>"


async def test_without_a_responder_the_fallback_comes_within_the_deadline_and_is_recorded(
    bridge: Bridge,
) -> None:
    sid = _sid("CA")
    started = time.monotonic()
    answer = await bridge.call(sid)
    elapsed = time.monotonic() - started
    assert answer.status_code == 200 and answer.text == FALLBACK
    assert TIMEOUT_S - 0.2 < elapsed < TIMEOUT_S + 1, elapsed
    errors = await _errors_for(bridge, sid)
    assert errors["error"]["kind"] == "timeout"
    assert errors["source"]["topic"] == bridge.topic("voice")


async def test_a_malformed_answer_gets_the_fallback_and_an_error_record(bridge: Bridge) -> None:
    def broken(_: dict[str, str], data: dict[str, Any]) -> tuple[float, bytes]:
        return 0.0, b"<Response><Say>unclosed</Response>"

    async with Responder(bridge.bootstrap, [bridge.topic("voice")], broken):
        sid = _sid("CA")
        started = time.monotonic()
        answer = await bridge.call(sid)
    assert answer.status_code == 200 and answer.text == FALLBACK
    assert time.monotonic() - started < TIMEOUT_S  # not held until the deadline
    error = await _errors_for(bridge, sid)
    assert error["error"]["kind"] == "validation"
    assert "not well-formed XML" in error["error"]["message"]
    assert error["source"]["topic"] == bridge.twiml_topic


async def test_a_late_answer_is_not_used_by_the_next_call(bridge: Bridge) -> None:
    first, second = _sid("CA"), _sid("CA")

    def slow_first(_: dict[str, str], data: dict[str, Any]) -> tuple[float, bytes]:
        # The first call's answer lands while the second call waits for its own.
        delay = TIMEOUT_S + 0.4 if data["CallSid"] == first else 0.8
        return delay, f"<Response><Say>Hello {data['CallSid']}</Say></Response>".encode()

    late_before = await bridge.metric("twilio_bridge_twiml_dropped_total", reason="late")
    async with Responder(bridge.bootstrap, [bridge.topic("voice")], slow_first):
        assert (await bridge.call(first)).text == FALLBACK
        answer = await bridge.call(second)
    assert answer.text == f"<Response><Say>Hello {second}</Say></Response>"
    assert await bridge.metric("twilio_bridge_twiml_dropped_total", reason="late") == (
        late_before + 1
    )
    # Twilio's retry of the first call keeps the answer it got.
    assert (await bridge.call(first)).text == FALLBACK


async def test_twilios_retry_of_a_waiting_webhook_gets_the_same_twiml(bridge: Bridge) -> None:
    def after_a_second(_: dict[str, str], data: dict[str, Any]) -> tuple[float, bytes]:
        return 1.0, f"<Response><Say>Hello {data['CallSid']}</Say></Response>".encode()

    sid, token = _sid("CA"), str(uuid.uuid4())
    async with Responder(bridge.bootstrap, [bridge.topic("voice")], after_a_second) as responder:
        first = asyncio.create_task(bridge.call(sid, token))
        await asyncio.sleep(0.3)
        retry = await bridge.call(sid, token)
        answered = await first
        again = await bridge.call(sid, token)  # after the answer, too
    expected = f"<Response><Say>Hello {sid}</Say></Response>"
    assert answered.text == retry.text == again.text == expected
    assert [h["ce_id"] for h in responder.seen] == [token]  # published once


async def test_two_replicas_each_get_the_answers_for_their_own_webhooks(
    bridge: Bridge, tmp_path: Path
) -> None:
    other = await _start(
        bridge.bootstrap,
        tmp_path / "replica.log",
        bridge.process.topics,
    )
    try:
        async with Responder(bridge.bootstrap, [bridge.topic("voice")], say_call_sid):
            sids = [_sid("CA") for _ in range(10)]
            replicas = [bridge, other] * 5
            answers = await asyncio.gather(
                *(replica.call(sid) for replica, sid in zip(replicas, sids, strict=True))
            )
    finally:
        await other.close()
    # Three partitions on the TwiML topic: the answers are spread over them.
    assert [a.text for a in answers] == [f"<Response><Say>Hello {s}</Say></Response>" for s in sids]


async def test_a_suspended_broker_gets_503_and_nothing_is_awaited(tmp_path: Path) -> None:
    async with TansuBroker(log_dir=tmp_path) as broker:
        topics = await _fresh_topics(broker.bootstrap_servers)
        bridge = await _start(
            broker.bootstrap_servers,
            tmp_path / "bridge.log",
            topics,
            BRIDGE_WEBHOOK__ACK_TIMEOUT_S="1",
        )
        try:
            broker.suspend()
            try:
                answer = await bridge.call(_sid("CA"))
            finally:
                broker.resume()
            assert answer.status_code == 503, answer.text
            assert await bridge.metric("twilio_bridge_twiml_waiting") == 0
        finally:
            await bridge.close()


async def _errors_for(bridge: Bridge, event_id: str) -> dict[str, Any]:
    """The error record about ``event_id``, polled for up to 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = await collect(bridge.bootstrap, bridge.process.topics.errors, 10_000, 2)
        for record in found:
            if record.value["id"] == event_id:
                assert record.key == event_id.encode()
                return dict(record.value)
    raise AssertionError(f"no error record for {event_id}")
