"""The service's publishing (``bridge.app.service.Bridge``) with Kafka replaced by a recorder."""

from __future__ import annotations

import json

from bridge.app.service import Bridge
from bridge.config import Settings
from bridge.kafka.producer import RecordTooLarge
from bridge.kafka.records import Record


async def test_an_outcome_kafka_refuses_leaves_a_minimal_error_record_not_a_stuck_partition() -> (
    None
):
    bridge = Bridge(Settings(dedupe={"window_s": 0}))
    sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def publish(
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: object,
        partition: object = None,
    ) -> tuple[int, int]:
        if key is not None:
            raise RecordTooLarge("the key alone is over the limit")
        sent.append((topic, key, value))
        return 0, len(sent)

    bridge.publisher.publish = publish  # type: ignore[method-assign]
    record = Record("twilio.requests", 2, 41, b"k" * 2_000_000, b"not json", (), 0)
    await bridge.handle(record)  # returns: the offset can be committed
    [(topic, key, value)] = sent
    assert value is not None
    error = json.loads(value)
    assert topic == "twilio.errors" and key is None
    assert error["error"]["kind"] == "internal"
    assert error["source"] == {
        "topic": "twilio.requests",
        "partition": 2,
        "offset": 41,
        "key": None,
        "timestamp_ms": None,
    }
