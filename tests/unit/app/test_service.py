"""The service: its components' order, and publishing with Kafka replaced by a recorder."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable

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
    await bridge.outbound.handler(record)  # returns: the offset can be committed
    await bridge.close()
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


def _recording(bridge: Bridge, calls: list[str], fail: str | None = None) -> list[str]:
    """Make every component record its start and stop in ``calls``; ``fail`` refuses to start.

    Nothing really starts; each stop still runs, as on an unstarted component, so that the
    Kafka clients made at construction are closed."""
    names = []
    for component in bridge.components:
        name = type(component).__name__
        names.append(name)

        async def start(name: str = name) -> None:
            calls.append(f"start {name}")
            if name == fail:
                raise RuntimeError(f"{name} cannot start")

        async def stop(
            name: str = name, really: Callable[[], Awaitable[None]] = component.stop
        ) -> None:
            calls.append(f"stop {name}")
            await really()

        component.start = start  # type: ignore[method-assign]
        component.stop = stop  # type: ignore[method-assign]
    return names


async def test_components_start_in_order_and_stop_in_reverse() -> None:
    settings = Settings(
        admin={
            "enabled": True,
            "token": "t" * 32,
            "encryption_key": base64.b64encode(bytes(32)).decode(),
        },
        credentials={},
        dedupe={"window_s": 60},
    )
    bridge = Bridge(settings)
    calls: list[str] = []
    names = _recording(bridge, calls)
    assert names == [
        "Publisher",
        "InstanceLog",
        "RedeliveryLog",
        "IdempotencyLog",
        "HttpServer",
        "RequestConsumer",
        "Poller",
    ]
    await bridge.start()
    assert bridge.started
    await bridge.close()
    assert calls == [f"start {n}" for n in names] + [f"stop {n}" for n in reversed(names)]
    assert not bridge.started


async def test_a_failed_start_up_stops_every_component_in_reverse() -> None:
    bridge = Bridge(Settings(dedupe={"window_s": 0}, webhook={"dedupe_window_s": 0}))
    calls: list[str] = []
    names = _recording(bridge, calls, fail="HttpServer")
    assert names == ["Publisher", "HttpServer", "RequestConsumer"]
    try:
        await bridge.start()
    except RuntimeError:
        pass
    else:
        raise AssertionError("start-up should have failed")
    await bridge.close()
    assert calls == [
        "start Publisher",
        "start HttpServer",
        "stop RequestConsumer",
        "stop HttpServer",
        "stop Publisher",
    ]


async def test_twiml_answers_start_before_webhooks_are_served() -> None:
    bridge = Bridge(Settings(dedupe={"window_s": 0}, twiml={"families": ["voice"]}))
    calls: list[str] = []
    names = _recording(bridge, calls)
    assert names == ["Publisher", "RedeliveryLog", "TwimlAnswers", "HttpServer", "RequestConsumer"]
    await bridge.start()
    await bridge.close()
    assert calls == [f"start {n}" for n in names] + [f"stop {n}" for n in reversed(names)]
