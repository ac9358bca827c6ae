"""Instances through the admin API, against Tansu, with two real bridge replicas.

Each replica consumes its own request topic (so which replica handled an envelope is known)
and both share one instances topic, as replicas of one deployment do. What must hold: an
instance created on one replica is used by the other within seconds and without a restart, a
restarted replica rebuilds its view from the topic, a deleted instance makes later envelopes
fail as ``validation``, and no secret is readable anywhere: API answers, logs, the topic's
bytes, audit events.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from aiokafka import AIOKafkaConsumer
from twilio.request_validator import RequestValidator

from bridge.tooling.local.tansu import create_topics
from tests.support.harness import BridgeProcess, Topics, collect, produce

TOKEN = "admin-" + uuid.uuid4().hex
KEY = base64.b64encode(os.urandom(32)).decode()
# Recognisable secrets: any leak of them (or of their base64) is found by a plain search.
SECRET_1 = "s3cr3t1" + uuid.uuid4().hex[:25]
SECRET_2 = "s3cr3t2" + uuid.uuid4().hex[:25]
ACME_SID = "AC" + "ac" * 16
BETA_SID = "AC" + "be" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FORM = "application/x-www-form-urlencoded"


def _admin_env(tag: str) -> dict[str, str]:
    """The instances API on, with this test's own topics."""
    return {
        "BRIDGE_ADMIN__ENABLED": "true",
        "BRIDGE_ADMIN__TOKEN": TOKEN,
        "BRIDGE_ADMIN__ENCRYPTION_KEY": KEY,
        "BRIDGE_ADMIN__TOPIC": f"instances-{tag}",
        "BRIDGE_ADMIN__AUDIT_TOPIC": f"audit-{tag}",
    }


def _leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    found = []
    for secret in (SECRET_1, SECRET_2):
        for form in (secret.encode(), base64.b64encode(secret.encode())):
            if form in data:
                found.append(secret[:7])
    return found


async def _metric(client: httpx.AsyncClient, bridge: BridgeProcess, name: str) -> float:
    text = (await client.get(f"{bridge.http_url}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def _until_instances(
    client: httpx.AsyncClient, bridge: BridgeProcess, count: int, within_s: float = 10
) -> float:
    """Seconds until the replica's own view (its gauge, no API call) holds ``count``."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if await _metric(client, bridge, "twilio_bridge_instances ") == count:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{bridge.http_url} never saw {count} instances")


def _envelope(n: int, credential: str) -> tuple[bytes, bytes]:
    request_id = f"{credential}-{n}-{uuid.uuid4().hex[:6]}"
    envelope = {
        "id": request_id,
        "mode": "basic",
        "operation": "CreateMessage",
        "credential": credential,
        "body": {"To": "+14155550100", "From": "+14155550101", "Body": f"hi {n}"},
    }
    return request_id.encode(), json.dumps(envelope).encode()


async def _send(
    bootstrap: str, topic: str, replies: str, envelopes: list[tuple[bytes, bytes]]
) -> list[dict[str, Any]]:
    """Produce the envelopes; their replies, read from the (shared) reply topic."""
    await produce(bootstrap, topic, envelopes)
    ids = {key.decode() for key, _ in envelopes}
    consumer = AIOKafkaConsumer(replies, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + 30
        while len(found) < len(ids) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    reply = json.loads(record.value)
                    if reply["id"] in ids:
                        found[reply["id"]] = reply
    finally:
        await consumer.stop()
    assert len(found) == len(ids), f"{len(found)} of {len(ids)} replies"
    return list(found.values())


Stored = list[tuple[bytes | None, bytes | None, dict[str, bytes]]]


async def _read_all(bootstrap: str, topic: str) -> Stored:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: Stored = []
    try:
        for _ in range(10):
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out += [(r.key, r.value, dict(r.headers)) for r in records]
    finally:
        await consumer.stop()
    return out


def _acme(secret: str) -> dict[str, Any]:
    return {
        "name": "acme",
        "configuration": {"account_sid": ACME_SID, "auth_token": secret, "filter_nulls": True},
        "tags": ["customer", "eu"],
    }


async def test_instances_are_shared_by_replicas_used_and_deleted_without_restarts(
    tansu: Any, mock: Any, tmp_path: Path
) -> None:
    bootstrap = tansu.bootstrap_servers
    base_url = mock("--latency-ms", "0")
    tag = uuid.uuid4().hex[:8]
    first = Topics.fresh()
    second = replace(Topics.fresh(), replies=first.replies, errors=first.errors)
    await first.create(bootstrap)
    await second.create(bootstrap)
    env = {**_admin_env(tag), "BRIDGE_LOG_LEVEL": "DEBUG"}
    a = BridgeProcess(bootstrap, base_url, first, tmp_path / "a.log", dict(env)).start()
    b = BridgeProcess(bootstrap, base_url, second, tmp_path / "b.log", dict(env)).start()
    answers: list[str] = []
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            await a.wait_ready()
            await b.wait_ready()

            # No token, wrong token: refused before anything is read.
            assert (await http.get(f"{a.http_url}/instances")).status_code == 401
            wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}
            assert (await http.get(f"{a.http_url}/instances", headers=wrong)).status_code == 401

            # Every problem of a bad configuration at once.
            bad = {"name": "bad name!", "configuration": {"account_sid": "AC1", "region": "x"}}
            refused = await http.post(f"{a.http_url}/instances", json=bad, headers=AUTH)
            answers.append(refused.text)
            error = refused.json()["error"]
            assert refused.status_code == 400 and error["kind"] == "validation"
            assert {"name", "configuration.account_sid", "configuration.region"} <= set(
                error["invalid"]
            ), error
            assert "configuration.auth_token" in error["missing"], error

            # Created on A; B's own view has it within seconds, no API call to B needed.
            created = await http.post(f"{a.http_url}/instances", json=_acme(SECRET_1), headers=AUTH)
            answers.append(created.text)
            assert created.status_code == 201, created.text
            assert created.headers["location"] == "/instances/acme"
            assert created.headers["etag"] == '"1"'
            assert created.json()["configuration"]["auth_token"] == "********"
            seen_after_s = await _until_instances(http, b, 1)
            print(f"\nB saw the instance created on A {seen_after_s:.2f} s after A answered")

            # Envelopes naming it succeed on both replicas, with the instance's account.
            replies = await _send(
                bootstrap,
                first.requests,
                first.replies,
                [_envelope(n, "acme") for n in range(5)],
            )
            replies += await _send(
                bootstrap,
                second.requests,
                first.replies,
                [_envelope(n, "acme") for n in range(5, 10)],
            )
            assert all(r["status"] == "ok" for r in replies), replies[0]
            assert all(f"/Accounts/{ACME_SID}/" in r["path"] for r in replies)
            for bridge in (a, b):
                assert await _metric(http, bridge, "twilio_bridge_twilio_requests_total") >= 5

            # Changed on B (a new token, tags), read back on A.
            patched = await http.patch(
                f"{b.http_url}/instances/acme",
                json={"configuration": {"auth_token": SECRET_2}, "tags": ["customer"]},
                headers={**AUTH, "If-Match": '"1"', "X-On-Behalf-Of": "ops@example.com"},
            )
            answers.append(patched.text)
            assert patched.status_code == 200 and patched.json()["revision"] == 2, patched.text
            stale = await http.patch(
                f"{a.http_url}/instances/acme",
                json={"tags": []},
                headers={**AUTH, "If-Match": '"1"'},
            )
            assert stale.status_code == 412, stale.text
            read = await http.get(f"{a.http_url}/instances/acme", headers=AUTH)
            answers.append(read.text)
            assert read.json()["tags"] == ["customer"] and read.headers["etag"] == '"2"'

            # A second instance, then B restarts: its view comes back from the topic alone.
            beta = {
                "name": "beta",
                "configuration": {"account_sid": BETA_SID, "auth_token": SECRET_1},
            }
            assert (
                await http.put(f"{a.http_url}/instances/beta", json=beta, headers=AUTH)
            ).status_code == 201
            assert b.stop() == 0
            b.start()
            await b.wait_ready()
            assert await _metric(http, b, "twilio_bridge_instances ") == 2
            [beta_reply] = await _send(
                bootstrap, second.requests, first.replies, [_envelope(0, "beta")]
            )
            assert beta_reply["status"] == "ok" and f"/Accounts/{BETA_SID}/" in beta_reply["path"]

            # Deleted on B: later envelopes on A fail as validation, saying it was deleted.
            deleted = await http.delete(f"{b.http_url}/instances/acme", headers=AUTH)
            assert deleted.status_code == 204
            await _until_instances(http, a, 1)
            [gone] = await _send(bootstrap, first.requests, first.replies, [_envelope(99, "acme")])
            assert gone["status"] == "error" and gone["error"]["kind"] == "validation"
            assert "deleted" in gone["error"]["message"], gone["error"]
            listing = await http.get(f"{a.http_url}/instances", headers=AUTH)
            answers.append(listing.text)
            assert [i["name"] for i in listing.json()["instances"]] == ["beta"]
    finally:
        for bridge in (a, b):
            assert bridge.stop() == 0, bridge.log()[-3000:]

    # No secret anywhere: API answers, both logs, the instances topic's bytes, the audit.
    stored = await _read_all(bootstrap, f"instances-{tag}")
    audit = await _read_all(bootstrap, f"audit-{tag}")
    assert {k for k, _, _ in stored} == {b"acme", b"beta"}
    assert any(v is None for k, v, _ in stored if k == b"acme"), "no tombstone for acme"
    places = {
        "API answers": "\n".join(answers),
        "replica A's log": a.log(),
        "replica B's log": b.log(),
        "instances topic": b"".join(v or b"" for _, v, _ in stored).decode(errors="replace"),
        "audit topic": b"".join((v or b"") + b"".join(h.values()) for _, v, h in audit).decode(
            errors="replace"
        ),
    }
    leaks = {where: found for where, text in places.items() if (found := _leaks(text))}
    assert not leaks, leaks

    events = [(h["ce_type"].decode(), json.loads(v or b"{}")) for _, v, h in audit]
    assert [t.rsplit(".", 1)[1] for t, _ in events] == ["created", "updated", "created", "deleted"]
    _, update = events[1]
    assert update["actor"]["on_behalf_of"] == "ops@example.com"
    assert "configuration.auth_token" in update["changed"] and "tags" in update["changed"]
    assert update["instance_after"]["configuration"]["auth_token"] == "********"
    print(f"audit events: {[t for t, _ in events]}; secrets found in {len(places)} places: 0")


async def test_instance_events_by_webhook_and_by_polling_follow_each_instance(
    tansu: Any, prism: Any, tmp_path: Path
) -> None:
    bootstrap = tansu.bootstrap_servers
    topics = Topics.fresh()
    await topics.create(bootstrap)
    tag = topics.group
    hooks_topic, polled_topic = f"hooks-{tag}", f"polled-{tag}"
    await create_topics(bootstrap, [hooks_topic, polled_topic])
    env = {
        **_admin_env(tag),
        "BRIDGE_POLLER__START_AT": "2000-01-01T00:00:00Z",
        "BRIDGE_POLLER__STATE_TOPIC": f"poll-{tag}",
        "BRIDGE_POLLER__PARTITIONS": "1",
        "BRIDGE_WEBHOOK__TOPIC_PREFIX": f"ev-{tag}.",
    }
    bridge = BridgeProcess(bootstrap, prism.base_url, topics, tmp_path / "b.log", env).start()
    hooks = {
        "configuration": {
            "account_sid": ACME_SID,
            "auth_token": SECRET_1,
            "events": {"mechanism": "webhook", "topics": {"messages": hooks_topic}},
        }
    }
    polled = {
        "configuration": {
            "account_sid": BETA_SID,
            "auth_token": SECRET_2,
            "events": {
                "mechanism": "polling",
                "refresh_interval_s": 1,
                "topics": {"message-status": polled_topic},
            },
        }
    }
    try:
        async with httpx.AsyncClient(base_url=bridge.http_url, timeout=20) as http:
            await bridge.wait_ready()
            for name, body in (("hooks", hooks), ("polled", polled)):
                created = await http.put(f"/instances/{name}", json=body, headers=AUTH)
                assert created.status_code == 201, created.text

            # A webhook is matched to its instance by AccountSid: its token, its topic.
            url = f"{bridge.http_url}/webhooks/twilio/messages"
            params = {
                "AccountSid": ACME_SID,
                "MessageSid": "SM" + "7" * 32,
                "From": "+14155550100",
                "To": "+14155550101",
                "Body": "hello",
            }

            async def post(token: str, account: str) -> httpx.Response:
                form = {**params, "AccountSid": account}
                signature = RequestValidator(token).compute_signature(url, form)
                return await http.post(
                    "/webhooks/twilio/messages",
                    content=urlencode(form),
                    headers={"content-type": FORM, "x-twilio-signature": signature},
                )

            assert (await post(SECRET_2, ACME_SID)).status_code == 403  # another's token
            accepted = await post(SECRET_1, ACME_SID)
            assert accepted.status_code == 200, accepted.text
            [event] = await collect(bootstrap, hooks_topic, 1, 20, settle_s=0.5)
            assert event.value["AccountSid"] == ACME_SID
            # The polling instance takes no webhooks: its events would come twice.
            refused = await post(SECRET_2, BETA_SID)
            assert refused.status_code == 403 and "webhook" in refused.text

            # The polling instance is polled, its events on its own topic.
            states = await collect(bootstrap, polled_topic, 1, 30, settle_s=0.5)
            assert len(states) == 1, states

            # Deleted: its poller stops.
            assert (await http.delete("/instances/polled", headers=AUTH)).status_code == 204
            await asyncio.sleep(1.5)  # a poll under way finishes
            before = bridge.log().count("poller polled:")
            await asyncio.sleep(3)
            after = bridge.log().count("poller polled:")
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]
    print(f"\npolls of the deleted instance in the 3 s after deleting it: {after - before}")
    assert before >= 1 and after == before
