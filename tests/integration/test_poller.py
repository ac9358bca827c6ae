"""The message poller through the real bridge process, against Prism serving Twilio's spec.

Prism answers ``ListMessage`` with the spec's example page (one message, and a next page that
repeats it), every time: the poller must publish that message's state once, across polls and
across a restart, and hand its watermark to the next process through Kafka.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from pathlib import Path
from typing import Any

from bridge.tooling.local.tansu import create_topics
from tests.helpers import ACCOUNT, AUTH_TOKEN
from tests.support.harness import BridgeProcess, Topics, collect

EXAMPLE_SID = "SMded05904ccb347238880ca9264e8fe1c"  # the spec's example message


async def _polling_setup(bootstrap: str) -> tuple[Topics, str, dict[str, str]]:
    """Fresh topics, the event topics' prefix, and a bridge environment that polls often."""
    topics = Topics.fresh()
    await topics.create(bootstrap)
    prefix = f"ev-{topics.group}."
    await create_topics(bootstrap, [prefix + "messages", prefix + "message-status"])
    env = {
        "BRIDGE_CREDENTIALS__DEFAULT__POLL": "true",
        "BRIDGE_POLLER__START_AT": "2000-01-01T00:00:00Z",
        "BRIDGE_POLLER__REFRESH_INTERVAL_S": "1",
        "BRIDGE_POLLER__STATE_TOPIC": f"poll-{topics.group}",
        "BRIDGE_POLLER__PARTITIONS": "2",
        "BRIDGE_WEBHOOK__TOPIC_PREFIX": prefix,
    }
    return topics, prefix, env


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
    topics, prefix, env = await _polling_setup(bootstrap)
    state_topic = env["BRIDGE_POLLER__STATE_TOPIC"]
    # A second credential for the same account, whose key Kafka would hash to the other
    # partition than the poller assigns it (its events are the same ids, published once).
    env["BRIDGE_CREDENTIALS__BILLING__ACCOUNT_SID"] = ACCOUNT
    env["BRIDGE_CREDENTIALS__BILLING__AUTH_TOKEN"] = AUTH_TOKEN
    env["BRIDGE_CREDENTIALS__BILLING__POLL"] = "true"
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
    assert {s.key for s in states} == {b"default", b"billing"}
    # In the partition that decides ownership, so the credential's next owner finds it.
    assert all(s.partition == zlib.crc32(s.key or b"") % 2 for s in states)
    states = [s for s in states if s.key == b"default"]
    assert json.loads(json.dumps(states[-1].value))["watermark"].startswith("2019-05-24T17:44:50")


async def test_two_replicas_share_the_work_and_only_one_polls_a_credential(
    tansu: Any, prism: Any, tmp_path: Path
) -> None:
    bootstrap = tansu.bootstrap_servers
    topics, prefix, env = await _polling_setup(bootstrap)
    replicas = [
        BridgeProcess(bootstrap, prism.base_url, topics, tmp_path / f"{n}.log", dict(env))
        for n in range(2)
    ]
    marker = "poller: owns state partitions "
    try:
        # One after the other, as a rollout starts them: Tansu mixes up the assignments of
        # members that join a new group at the same moment (both were given partition 1).
        for replica in replicas:
            replica.start()
            for _ in range(300):
                if marker in replica.log():
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(8)  # the rebalance: Tansu holds a join for half the session timeout
        before = [r.log().count("poller default:") for r in replicas]
        await asyncio.sleep(4)
        after = [r.log().count("poller default:") for r in replicas]
        polls = [a - b for a, b in zip(after, before, strict=True)]
        # Read before stopping: once one stops, the other takes its partition over.
        owned = [r.log().rsplit(marker, 1)[-1].split('"')[0] for r in replicas]
    finally:
        for replica in replicas:
            assert replica.stop() == 0, replica.log()[-3000:]
    print(f"\npolls of 'default' per replica over 4 s, once both had joined: {polls}")
    # Each replica owns one of the two state partitions, and only the owner of default's polls.
    assert sorted(owned) == ["[0]", "[1]"], owned
    assert sorted(polls)[0] == 0 and sorted(polls)[1] >= 2
    events = await collect(bootstrap, prefix + "message-status", 1, 20, settle_s=1)
    assert len(events) == 1
