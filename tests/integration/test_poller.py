"""The message poller through the real bridge process, against Prism serving Twilio's spec.

Prism answers ``ListMessage`` with the spec's example page (one message, and a next page that
repeats it), every time: the poller must publish that message's state once, across polls and
across a restart, and hand its watermark to the next process through Kafka.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from bridge.local.tansu import create_topics
from tests.integration.harness import BridgeProcess, Topics, collect

EXAMPLE_SID = "SMded05904ccb347238880ca9264e8fe1c"  # the spec's example message


async def _run_until_polled(process: BridgeProcess, polls: int) -> None:
    process.start()
    try:
        for _ in range(300):
            if process.log().count("poller default:") >= polls:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the poller did not poll:\n" + process.log()[-3000:])
    finally:
        assert process.stop() == 0, process.log()[-3000:]


async def test_each_message_state_is_published_once_across_polls_and_a_restart(
    tansu: Any, prism: Any, tmp_path: Path
) -> None:
    bootstrap = tansu.bootstrap_servers
    topics = Topics.fresh()
    await topics.create(bootstrap)
    prefix = f"ev-{topics.group}."
    await create_topics(bootstrap, [prefix + "messages", prefix + "message-status"])
    state_topic = f"poll-{topics.group}"
    env = {
        "BRIDGE_CREDENTIALS__DEFAULT__POLL": "true",
        "BRIDGE_POLLER__START_AT": "2000-01-01T00:00:00Z",
        "BRIDGE_POLLER__REFRESH_INTERVAL_S": "1",
        "BRIDGE_POLLER__STATE_TOPIC": state_topic,
        "BRIDGE_POLLER__PARTITIONS": "2",
        "BRIDGE_WEBHOOK__TOPIC_PREFIX": prefix,
    }
    for run in ("first", "after restart"):
        process = BridgeProcess(
            bootstrap, prism.base_url, topics, tmp_path / f"{run}.log", dict(env)
        )
        await _run_until_polled(process, polls=3)
        events = await collect(bootstrap, prefix + "message-status", 1, 20, settle_s=1)
        assert [e.key for e in events] == [EXAMPLE_SID.encode()], run
    [event] = events
    headers = {k: v.decode() for k, v in event.headers.items()}
    assert headers["ce_type"] == "com.twilio.messaging.message.sent"
    assert headers["ce_id"] == f"poll.{EXAMPLE_SID}.sent"
    assert event.value["MessageStatus"] == "sent" and event.value["To"] == "+18182008801"
    states = await collect(bootstrap, state_topic, 1, 20, settle_s=1)
    assert states and all(s.key == b"default" for s in states)
    assert json.loads(json.dumps(states[-1].value))["watermark"].startswith("2019-05-24T17:44:50")
