from __future__ import annotations

import asyncio

import orjson

from bridge.config import TrackingSettings
from bridge.tracking.book import EVENT, SEND
from bridge.tracking.correlation import partition_of
from bridge.tracking.log import DeliveryLog
from bridge.tracking.send import Event, TrackedSend
from tests.helpers import ACCOUNT, RecordingPublisher

SETTINGS = TrackingSettings(partitions=12)
TOKEN = "Abc-_" + "x" * 19
SEND_STATE = TrackedSend(TOKEN, "req-1", b"key", {"m": 1}, "message", ACCOUNT, "default", 0.0)


async def test_a_send_is_recorded_under_its_token_in_the_tokens_partition() -> None:
    publisher = RecordingPublisher()
    await DeliveryLog(SETTINGS, publisher).begin(SEND_STATE)
    [(topic, key, value, headers, partition)] = publisher.sent
    assert (topic, key, headers) == (SETTINGS.state_topic, TOKEN.encode(), [("kind", SEND)])
    assert value is not None and TrackedSend.from_json(value) == SEND_STATE
    assert partition == partition_of(TOKEN, 12)


async def test_events_have_keys_of_their_own_in_the_same_partition() -> None:
    publisher = RecordingPublisher()
    log = DeliveryLog(SETTINGS, publisher)
    answer = Event("answer", account_sid=ACCOUNT, sid="SM1")
    await log.learnt(TOKEN, answer)
    await log.learnt(TOKEN, answer)
    keys = [key for _, key, _, _, _ in publisher.sent]
    assert len(set(keys)) == 2 and all(k is not None and k.startswith(b"Abc-_") for k in keys)
    assert {p for *_, p in publisher.sent} == {partition_of(TOKEN, 12)}
    assert {tuple(h) for _, _, _, h, _ in publisher.sent} == {(("kind", EVENT),)}


async def test_a_callback_is_handed_over_once_acknowledged_and_written_even_when_late() -> None:
    publisher = RecordingPublisher(held=True)
    log = DeliveryLog(SETTINGS, publisher)
    params = {"AccountSid": ACCOUNT, "MessageSid": "SM1", "MessageStatus": "sent"}
    assert await log.hand_over(TOKEN, params, timeout_s=0.01) is False  # not acknowledged
    publisher.ack.set()
    assert await log.drain(1.0) is True  # the write went on and finished
    publisher.ack.clear()
    waiting = asyncio.ensure_future(log.hand_over(TOKEN, params, timeout_s=5))
    await asyncio.sleep(0)
    publisher.ack.set()
    assert await waiting is True
    values = [orjson.loads(value or b"") for _, _, value, _, _ in publisher.sent]
    assert values[0]["params"] == params and values[0]["account_sid"] == ACCOUNT
    assert len(values) == 2
