"""Baseline consumers for ``bench_bridge.py``, each run as its own (pinned) child process.

    python -m tests.perf.baselines seq   BOOTSTRAP REQUESTS REPLIES GROUP MOCK_URL
    python -m tests.perf.baselines kafka BOOTSTRAP REQUESTS REPLIES GROUP [K]

* ``seq``: what most people write first: one record at a time, one httpx POST (httpx's
  default transport) to the mock, ``send_and_wait`` of a reply, ``commit()``. Per partition it
  makes at most 1 ÷ (latency + a few ms) envelopes per second.
* ``kafka``: the Kafka path alone, no HTTP: ``getmany`` up to K records, parse each request
  (orjson), produce a small reply for each with the bridge's producer settings (acks=all,
  512 KB batches, linger 2 ms), wait for every acknowledgement of the batch, commit its
  offsets. The ceiling of what aiokafka and the broker allow on one core.

Both log an ``assigned`` line when they join the group (what the benchmark's clock starts
from, as for the bridge) and run until terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from bridge.observability.logs import configure_logging
from tests.helpers import ACCOUNT, AUTH_TOKEN

MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
# Tansu holds a new group's first JoinGroup for half the session timeout: take Kafka's minimum.
SESSION_TIMEOUT_MS = 6000


class _LogAssigned(ConsumerRebalanceListener):  # type: ignore[misc]
    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        logging.getLogger("baseline").info("assigned %s", sorted(tp.partition for tp in assigned))


def _consumer(bootstrap: str, requests: str, group: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        # aiokafka's default unless bench_bridge.py --fetch-wait-ms says otherwise.
        fetch_max_wait_ms=int(os.environ.get("BASELINE_FETCH_MAX_WAIT_MS", "500")),
    )
    consumer.subscribe([requests], listener=_LogAssigned())
    return consumer


async def sequential(
    bootstrap: str, requests: str, replies: str, group: str, base_url: str
) -> None:
    """One record at a time: POST, reply, commit."""
    consumer = _consumer(bootstrap, requests, group)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    client = httpx.AsyncClient(base_url=base_url, auth=(ACCOUNT, AUTH_TOKEN), timeout=30)
    await consumer.start()
    await producer.start()
    try:
        async for msg in consumer:
            request = json.loads(msg.value)
            reply: dict[str, Any] = {"id": request["id"], "error": None}
            try:
                if request["mode"] == "basic":
                    response = await client.post(MESSAGES, data=request["body"])
                else:
                    form = {"content-type": "application/x-www-form-urlencoded"}
                    response = await client.post(
                        request["path"], content=request["body"], headers=form
                    )
                ok = response.status_code < 400
                reply |= {"status": "ok" if ok else "error", "http_status": response.status_code}
                reply["body"] = response.json()
                if not ok:
                    reply["error"] = {"kind": "twilio"}
            except httpx.HTTPError as exc:
                reply |= {"status": "error", "error": {"kind": type(exc).__name__}}
            reply["metadata"] = request.get("metadata")
            headers = [("id", reply["id"].encode()), ("status", reply["status"].encode())]
            await producer.send_and_wait(
                replies, json.dumps(reply).encode(), key=msg.key, headers=headers
            )
            await consumer.commit()
    finally:
        await client.aclose()
        await producer.stop()
        await consumer.stop()


async def kafka_only(
    bootstrap: str, requests: str, replies: str, group: str, in_flight: int
) -> None:
    """Consume up to K, produce a reply each, wait for the acks, commit: no HTTP."""
    consumer = _consumer(bootstrap, requests, group)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_batch_size=524_288, linger_ms=2
    )
    await consumer.start()
    await producer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=in_flight)
            futures = []
            offsets: dict[TopicPartition, int] = {}
            for tp, records in batch.items():
                for r in records:
                    request = orjson.loads(r.value)
                    value = orjson.dumps(
                        {"id": request["id"], "status": "ok", "metadata": request.get("metadata")}
                    )
                    headers = [("id", request["id"].encode()), ("status", b"ok")]
                    futures.append(await producer.send(replies, value, key=r.key, headers=headers))
                offsets[tp] = records[-1].offset + 1
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit(offsets)
    finally:
        await producer.stop()
        await consumer.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("kind", choices=["seq", "kafka"])
    p.add_argument("bootstrap")
    p.add_argument("requests")
    p.add_argument("replies")
    p.add_argument("group")
    p.add_argument("extra", help="seq: the mock's base URL; kafka: K, records in flight")
    ns = p.parse_args(argv)
    configure_logging("WARNING", "json")  # the bridge's format, for the "assigned" line
    logging.getLogger("baseline").setLevel(logging.INFO)
    if ns.kind == "seq":
        asyncio.run(sequential(ns.bootstrap, ns.requests, ns.replies, ns.group, ns.extra))
    else:
        asyncio.run(kafka_only(ns.bootstrap, ns.requests, ns.replies, ns.group, int(ns.extra)))


if __name__ == "__main__":
    main()
