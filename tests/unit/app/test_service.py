"""The service: its components' order, and publishing with Kafka replaced by a recorder."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable, Sequence

import pytest

from bridge.app import service
from bridge.app.service import Bridge
from bridge.config import KafkaSettings, Settings
from bridge.kafka.errors import BrokerError
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


@pytest.fixture(autouse=True)
def broker_answers(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The first contact with a broker succeeds at once; the timeouts it was given."""
    asked: list[float] = []

    async def reach(settings: KafkaSettings, timeout_s: float) -> None:
        asked.append(timeout_s)

    monkeypatch.setattr(service, "reach_broker", reach)
    return asked


def _recording(bridge: Bridge, calls: list[str], fail: str | None = None) -> list[str]:
    """Make every component record its start and stop in ``calls``; ``fail`` refuses to start.

    Nothing really starts; each stop still runs, as on an unstarted component, so that the
    Kafka clients made at construction are closed. The publisher's access check records the
    topics and group it was asked about."""

    async def check_access(topics: Sequence[str], group: str) -> None:
        calls.append(f"check {','.join(topics)} {group}")

    bridge.publisher.check_access = check_access  # type: ignore[method-assign]
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
        "HttpServer",
        "Publisher",
        "InstanceLog",
        "RedeliveryLog",
        "IdempotencyLog",
        "RequestConsumer",
        "Poller",
    ]
    await bridge.start()
    assert bridge.started
    await bridge.close()
    check = "check twilio.requests,twilio.replies,twilio.errors twilio-bridge"
    starts = [f"start {n}" for n in names]
    assert calls == [*starts[:2], check, *starts[2:]] + [f"stop {n}" for n in reversed(names)]
    assert not bridge.started


async def test_a_failed_start_up_stops_every_component_in_reverse() -> None:
    bridge = Bridge(Settings(dedupe={"window_s": 0}, webhook={"dedupe_window_s": 0}))
    calls: list[str] = []
    names = _recording(bridge, calls, fail="Publisher")
    assert names == ["HttpServer", "Publisher", "RequestConsumer"]
    try:
        await bridge.start()
    except RuntimeError:
        pass
    else:
        raise AssertionError("start-up should have failed")
    await bridge.close()
    assert calls == [
        "start HttpServer",
        "start Publisher",
        "stop RequestConsumer",
        "stop Publisher",
        "stop HttpServer",
    ]


def _unreachable(times: int, monkeypatch: pytest.MonkeyPatch) -> tuple[list[float], asyncio.Event]:
    """No broker answers the first ``times`` contacts (forever for -1); the contacts made, and
    an event set from the second on."""
    tries: list[float] = []
    second = asyncio.Event()

    async def reach(settings: KafkaSettings, timeout_s: float) -> None:
        tries.append(timeout_s)
        if len(tries) >= 2:
            second.set()
        if times < 0 or len(tries) <= times:
            raise BrokerError("reaching a broker", "KafkaConnectionError", "x", retriable=True)

    monkeypatch.setattr(service, "reach_broker", reach)
    monkeypatch.setattr(service, "CONTACT_EVERY_S", 0.01)
    return tries, second


async def test_start_up_waits_for_the_broker_serving_probes_and_saying_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bridge.app.service")
    tries, second = _unreachable(3, monkeypatch)
    bridge = Bridge(Settings(dedupe={"window_s": 0}, webhook={"dedupe_window_s": 0}))
    calls: list[str] = []
    _recording(bridge, calls)
    starting = asyncio.create_task(bridge.start())
    await second.wait()
    assert calls == ["start HttpServer"]
    checks = bridge.readiness()
    assert not checks["started"] and not checks["broker_reachable"]
    await starting
    await bridge.close()
    assert len(tries) == 4 and bridge.readiness()["broker_reachable"]
    assert calls[:3] == ["start HttpServer", "start Publisher", calls[2]]
    # Said once when the wait began (then every 30 s), and once when it ended.
    assert caplog.text.count("waiting for the broker (KafkaConnectionError: x)") == 1
    assert "broker reachable after" in caplog.text


async def test_a_signal_while_waiting_for_the_broker_ends_start_up_with_nothing_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, second = _unreachable(-1, monkeypatch)
    bridge = Bridge(Settings(dedupe={"window_s": 0}, webhook={"dedupe_window_s": 0}))
    calls: list[str] = []
    _recording(bridge, calls)
    starting = asyncio.create_task(bridge.start())
    await second.wait()
    bridge.stopping.set()
    await asyncio.wait_for(starting, 5)
    await bridge.close()
    assert not bridge.started
    assert calls == [
        "start HttpServer",
        "stop RequestConsumer",
        "stop Publisher",
        "stop HttpServer",
    ]


async def test_twiml_answers_start_before_webhooks_are_taken() -> None:
    """HTTP serves first (probes), but webhooks are refused until ``started``, which comes
    after every component, the TwiML answers among them."""
    bridge = Bridge(Settings(dedupe={"window_s": 0}, twiml={"families": ["voice"]}))
    calls: list[str] = []
    names = _recording(bridge, calls)
    assert names == ["HttpServer", "Publisher", "RedeliveryLog", "TwimlAnswers", "RequestConsumer"]
    await bridge.start()
    await bridge.close()
    check = "check twilio.requests,twilio.replies,twilio.errors twilio-bridge"
    starts = [f"start {n}" for n in names]
    assert calls == [*starts[:2], check, *starts[2:]] + [f"stop {n}" for n in reversed(names)]


async def test_a_broker_that_refuses_the_bridge_ends_start_up_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def reach(settings: KafkaSettings, timeout_s: float) -> None:
        raise BrokerError("connecting", "SaslAuthenticationFailed", retriable=False)

    monkeypatch.setattr(service, "reach_broker", reach)
    bridge = Bridge(Settings(dedupe={"window_s": 0}, webhook={"dedupe_window_s": 0}))
    _recording(bridge, [])
    with pytest.raises(BrokerError, match="SaslAuthenticationFailed"):
        await bridge.start()
    await bridge.close()
