"""Delivery tracking through the real bridge process, Tansu and ``fast_mock``.

Callbacks are signed with Twilio's own ``RequestValidator`` over exactly the StatusCallback URL
the bridge put in the create call (read back from what the mock received), and posted to the
replica the test names. Every tracked send must end in its statuses on the deliveries topic,
keyed like its request, each once, never backwards, exactly one of them final.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from bridge.tooling.local.tansu import create_topics
from bridge.twilio.encoding import FORM
from tests.helpers import ACCOUNT, AUTH_TOKEN
from tests.support.harness import (
    BridgeProcess,
    Received,
    TopicReader,
    Topics,
    collect,
    produce,
)

SIGNER = RequestValidator(AUTH_TOKEN)
MESSAGE = {"To": "+14155550100", "From": "+14155550101", "Body": "your order shipped"}


class Setup:
    """Fresh topics and the environment of tracking replicas against one mock."""

    def __init__(self, bootstrap: str, mock_url: str, tmp_path: Path, **env: str) -> None:
        self.bootstrap, self.mock_url, self.tmp_path = bootstrap, mock_url, tmp_path
        self.topics = Topics.fresh()
        tag = self.topics.group
        self.deliveries = f"deliveries-{tag}"
        self.message_events = f"ev-{tag}.message-status"
        self.state_topic = f"tracking-{tag}"
        self.public_url: str | None = None  # the first replica's; every replica shares it
        self.env = {
            "BRIDGE_TRACKING__TOPIC": self.deliveries,
            "BRIDGE_TRACKING__STATE_TOPIC": self.state_topic,
            "BRIDGE_TRACKING__PARTITIONS": "2",
            "BRIDGE_WEBHOOK__TOPIC_PREFIX": f"ev-{tag}.",
            **env,
        }

    async def create(self) -> None:
        await self.topics.create(self.bootstrap)
        await create_topics(
            self.bootstrap,
            [self.deliveries, self.message_events, f"ev-{self.topics.group}.call-status"],
        )

    def replica(self, name: str) -> BridgeProcess:
        process = BridgeProcess(
            self.bootstrap, self.mock_url, self.topics, self.tmp_path / f"{name}.log", {}
        )
        # Twilio signs the URL the bridge put in the request, whichever replica it reaches.
        self.public_url = self.public_url or process.http_url
        process.extra_env = {**self.env, "BRIDGE_WEBHOOK__PUBLIC_URL": self.public_url}
        return process

    async def send(
        self, key: bytes, envelope: dict[str, Any], headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        value = json.dumps(envelope).encode()
        await produce(self.bootstrap, self.topics.requests, [(key, value)], lambda _: headers or [])

    async def callback_url(self, request_id: str, within_s: float = 30) -> str:
        """The StatusCallback of the create call with ``request_id`` in its body, as the mock
        received it (before it answered)."""
        deadline = time.monotonic() + within_s
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                stats = (await client.get(f"{self.mock_url}/__stats")).json()
                for body in stats["bodies"]:
                    form = dict(parse_qsl(body))
                    if form.get("Body") == request_id or form.get("Url") == request_id:
                        return str(form["StatusCallback"])
                await asyncio.sleep(0.1)
        raise AssertionError(f"the mock never received {request_id}")

    async def deliveries_of(self, want: int, settle_s: float = 1.5) -> list[Received]:
        return await collect(self.bootstrap, self.deliveries, want, 45, settle_s=settle_s)


async def callback(
    url: str, params: dict[str, str], *, to: str | None = None, token: str = AUTH_TOKEN
) -> httpx.Response:
    """POST a status callback to ``url`` signed as Twilio signs it (``to``: another replica's
    base URL, the signed URL unchanged, as behind a load balancer)."""
    signature = RequestValidator(token).compute_signature(url, params)
    target = url
    if to is not None:
        parts = urlsplit(url)
        target = f"{to}{parts.path}?{parts.query}"
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            target,
            content=urlencode(params),
            headers={"content-type": FORM, "x-twilio-signature": signature},
        )


TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _status(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {"AccountSid": ACCOUNT, "MessageSid": sid, "MessageStatus": status, **extra}


def _message(request_id: str, **fields: Any) -> dict[str, Any]:
    body = {**MESSAGE, "Body": request_id}
    return {"id": request_id, "mode": "basic", "operation": "CreateMessage", "body": body, **fields}


async def _reply(setup: Setup, want: int = 1) -> list[dict[str, Any]]:
    replies = await collect(setup.bootstrap, setup.topics.replies, want, 45)
    return [r.value for r in replies]


async def test_statuses_are_published_once_in_order_and_forged_callbacks_are_refused(
    tansu: Any, mock: Any, tmp_path: Path
) -> None:
    setup = Setup(tansu.bootstrap_servers, mock(), tmp_path)
    await setup.create()
    bridge = setup.replica("bridge").start()
    try:
        await bridge.wait_ready()
        request_id = f"order-{uuid.uuid4().hex[:8]}"
        # WhatsApp: 'read' may follow 'delivered'.
        envelope = _message(request_id, track=True, metadata={"o": 7})
        envelope["body"] |= {"To": "whatsapp:+14155550100", "From": "whatsapp:+14155550101"}
        await setup.send(b"customer-42", envelope, [("traceparent", TRACEPARENT)])
        [reply] = await _reply(setup)
        assert reply["status"] == "ok", reply
        sid = reply["body"]["sid"]
        url = await setup.callback_url(request_id)
        # The URL carries an opaque token only: neither the key nor the metadata.
        assert re.fullmatch(
            re.escape(bridge.http_url) + r"/webhooks/twilio/message-status\?tracking=[\w-]{24}",
            url,
        ), url
        # A forged signature, and a token that was not the one signed: refused, nothing kept.
        forged = await callback(url, _status(sid, "delivered"), token="not-the-auth-token")
        assert forged.status_code == 403
        # A genuine signature, sent with another token in the URL.
        signature = SIGNER.compute_signature(url, _status(sid, "delivered"))
        async with httpx.AsyncClient() as client:
            tampered = await client.post(
                url.rsplit("=", 1)[0] + "=" + "A" * 24,
                content=urlencode(_status(sid, "delivered")),
                headers={"content-type": FORM, "x-twilio-signature": signature},
            )
        assert tampered.status_code == 403
        for status in ("sent", "sent", "delivered", "sent", "read"):
            answer = await callback(url, _status(sid, status, SmsStatus=status))
            assert answer.status_code == 200, answer.text
        records = await setup.deliveries_of(3)
        # Finished, the send leaves nothing in the state topic but tombstones: its own and
        # those of the events learnt about it (Twilio's answer, each callback).
        token = url.rsplit("=", 1)[1]
        async with TopicReader(setup.bootstrap, setup.state_topic) as state:
            await state.until(lambda reader: _finished(reader, token), 20)
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]
    values = [r.value for r in records]
    assert [(v["status"], v["sequence"], v["final"]) for v in values] == [
        ("sent", 1, False),
        ("delivered", 2, True),
        ("read", 3, False),
    ], values
    for record in records:
        assert record.key == b"customer-42"
        assert record.headers["id"] == request_id.encode()
        # Tracing is off: the request's own trace context, kept with the send, joins them.
        assert record.headers["traceparent"] == TRACEPARENT
        assert record.value["id"] == request_id and record.value["sid"] == sid
        assert record.value["metadata"] == {"o": 7} and record.value["source"] == "callback"
        assert record.value["event"]["MessageSid"] == sid
    # The plain events keep flowing: one per distinct delivery (Twilio's repeated deliveries,
    # signed alike, are recognised as such).
    events = await collect(setup.bootstrap, setup.message_events, 3, 20, settle_s=0.5)
    statuses = [e.value["MessageStatus"] for e in events]
    assert statuses == ["sent", "delivered", "read"]


def _finished(reader: TopicReader, token: str) -> bool:
    """Whether the state topic, as read so far, holds only tombstones under ``token``: its
    send's, then one for each of at least two events (the answer and a callback)."""
    latest: dict[bytes, Any] = {}
    for record in reader.records:
        key = record.key or b""
        if key == token.encode() or key.startswith(f"{token}/".encode()):
            latest[key] = record.value
    events = [key for key in latest if b"/" in key]
    gone = all(value is None for value in latest.values())
    return token.encode() in latest and len(events) >= 2 and gone


async def test_a_callback_before_the_answer_on_another_replica_and_after_a_restart(
    tansu: Any, mock: Any, tmp_path: Path
) -> None:
    mock_url = mock("--latency-ms", "3000")  # holds every answer 3 s
    setup = Setup(tansu.bootstrap_servers, mock_url, tmp_path)
    await setup.create()
    first, second = setup.replica("first"), setup.replica("second")
    first.start()
    try:
        await first.wait_ready()
        second.start()
        await second.wait_ready()
        request_id = f"early-{uuid.uuid4().hex[:8]}"
        await setup.send(b"k-early", _message(request_id, track=True))
        url = await setup.callback_url(request_id)
        # Twilio's answer is still held: the callback comes first, to the other replica.
        sid = "SM" + uuid.uuid4().hex
        early = await callback(url, _status(sid, "sent"), to=second.http_url)
        assert early.status_code == 200, early.text
        assert await collect(setup.bootstrap, setup.topics.replies, 1, 0.5) == []  # held still
        [reply] = await _reply(setup)
        assert reply["status"] == "ok", reply
        [record] = await setup.deliveries_of(1, settle_s=0)
        assert record.value["status"] == "sent" and record.key == b"k-early"
        # One replica restarts; the final status reaches it.
        assert second.stop() == 0, second.log()[-3000:]
        second.start()
        await second.wait_ready()
        late = await callback(url, _status(sid, "delivered"), to=second.http_url)
        assert late.status_code == 200, late.text
        records = await setup.deliveries_of(2)
    finally:
        for replica in (first, second):
            assert replica.stop() == 0, replica.log()[-3000:]
    assert [(r.value["status"], r.value["sequence"], r.value["final"]) for r in records] == [
        ("sent", 1, False),
        ("delivered", 2, True),
    ]


async def _fetches_answer(mock_url: str, status: str) -> None:
    """From now on the mock answers a fetch of a message with ``status``."""
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{mock_url}/__config?fetch_status={status}")
        answer.raise_for_status()


async def _reconciling(bootstrap: str, mock_url: str, tmp_path: Path, status: str) -> Setup:
    """Topics for replicas that fetch a send a second after it, from a mock whose fetches
    answer ``status``."""
    await _fetches_answer(mock_url, status)
    setup = Setup(
        bootstrap,
        mock_url,
        tmp_path,
        BRIDGE_TRACKING__RECONCILE_AFTER_S="1",
        BRIDGE_TRACKING__GIVE_UP_AFTER_S="600",
    )
    await setup.create()
    return setup


async def test_a_send_without_callbacks_is_reconciled_through_fetch_message(
    tansu: Any, mock: Any, tmp_path: Path
) -> None:
    setup = await _reconciling(tansu.bootstrap_servers, mock(), tmp_path, "delivered")
    mock_url = setup.mock_url
    bridge = setup.replica("bridge").start()
    try:
        await bridge.wait_ready()
        request_id = f"quiet-{uuid.uuid4().hex[:8]}"
        await setup.send(b"k-quiet", _message(request_id, track=True))
        [reply] = await _reply(setup)
        records = await setup.deliveries_of(1)
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{mock_url}/__stats")).json()
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]
    [record] = records
    assert record.value["status"] == "delivered" and record.value["final"] is True
    assert record.value["source"] == "reconcile" and record.value["sid"] == reply["body"]["sid"]
    fetches = [r for r in stats["by_route"] if r.startswith("GET ") and reply["body"]["sid"] in r]
    assert fetches, stats["by_route"]


async def test_a_call_is_tracked_through_its_lifecycle(
    tansu: Any, mock: Any, tmp_path: Path
) -> None:
    setup = Setup(tansu.bootstrap_servers, mock(), tmp_path)
    await setup.create()
    bridge = setup.replica("bridge").start()
    request_id = f"https://example.com/twiml/{uuid.uuid4().hex[:8]}"
    envelope = {
        "id": "call-1",
        "mode": "basic",
        "operation": "CreateCall",
        "body": {"To": "+14155550100", "From": "+14155550101", "Url": request_id},
        "track": True,
    }
    try:
        await bridge.wait_ready()
        await setup.send(b"k-call", envelope)
        [reply] = await _reply(setup)
        assert reply["status"] == "ok", reply
        url = await setup.callback_url(request_id)
        async with httpx.AsyncClient() as client:
            bodies = (await client.get(f"{setup.mock_url}/__stats")).json()["bodies"]
        [body] = [parse_qsl(b) for b in bodies if request_id in dict(parse_qsl(b)).values()]
        assert [v for k, v in body if k == "StatusCallbackEvent"] == [
            "initiated",
            "ringing",
            "answered",
            "completed",
        ]
        assert url.startswith(f"{bridge.http_url}/webhooks/twilio/call-status?tracking=")
        call_sid = reply["body"]["sid"]  # the mock names every resource SM…
        for status in ("initiated", "ringing", "in-progress", "ringing", "completed"):
            params = {"AccountSid": ACCOUNT, "CallSid": call_sid, "CallStatus": status}
            answer = await callback(url, params)
            assert answer.status_code == 200, answer.text
        records = await setup.deliveries_of(4)
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]
    assert [(r.value["status"], r.value["final"]) for r in records] == [
        ("initiated", False),
        ("ringing", False),
        ("in-progress", False),
        ("completed", True),
    ]
    assert {r.value["resource"] for r in records} == {"call"}
    assert {r.value["sid"] for r in records} == {call_sid}


async def _reconciled(replica: BridgeProcess) -> float:
    """The statuses ``replica`` published from its own fetches so far."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{replica.http_url}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "twilio_bridge_deliveries_total" and labels == {
                "source": "reconcile",
                "outcome": "published",
            }:
                return sample.value
    return 0.0


async def test_two_replicas_reconcile_each_send_once_across_a_rebalance(
    tansu: Any, mock: Any, tmp_path: Path
) -> None:
    # 'sent' is not final: each send is fetched again and again.
    setup = await _reconciling(tansu.bootstrap_servers, mock(), tmp_path, "sent")
    mock_url = setup.mock_url
    first, second = setup.replica("first"), setup.replica("second")
    ids = [f"quiet-{n}-{uuid.uuid4().hex[:8]}" for n in range(8)]
    try:
        first.start()
        second.start()
        await first.wait_ready()
        await second.wait_ready()
        for n, request_id in enumerate(ids):
            await setup.send(f"k-{n}".encode(), _message(request_id, track=True))
        assert {r["status"] for r in await _reply(setup, len(ids))} == {"ok"}
        assert len(await setup.deliveries_of(len(ids))) == len(ids)  # each 'sent', fetched
        # The two owners between them published each 'sent' once, though both kept fetching.
        published = [await _reconciled(replica) for replica in (first, second)]
        # A rebalance: the first replica takes over the second's sends and goes on with them.
        assert second.stop() == 0, second.log()[-3000:]
        await _fetches_answer(mock_url, "delivered")
        records = await setup.deliveries_of(2 * len(ids))
    finally:
        for replica in (first, second):
            assert replica.stop() == 0, replica.log()[-3000:]
    assert sum(published) == len(ids), published
    by_request: dict[str, list[tuple[str, int, bool, str]]] = {}
    for record in records:
        value = record.value
        assert value["source"] == "reconcile", value
        entry = (value["status"], value["sequence"], value["final"], (record.key or b"").decode())
        by_request.setdefault(value["id"], []).append(entry)
    assert by_request == {
        request_id: [("sent", 1, False, f"k-{n}"), ("delivered", 2, True, f"k-{n}")]
        for n, request_id in enumerate(ids)
    }
