"""Memory an owner holds per tracked send not yet final (issue 16: at most 300 bytes, measured
at 100,000 of them).

    .venv/bin/python -m tests.perf.bench_tracking_state               # 100,000 sends, ~30 s
    .venv/bin/python -m tests.perf.bench_tracking_state --sends 10000 --metadata-bytes 200

The real ``DeliveryTracker`` reads, for each send, the records its state partition holds as the
bridge writes them: the send (the README's example request: a request id, key and
``metadata`` of its own), Twilio's answer (a SID) and a ``sent`` callback. Then the sends are
older than ``BRIDGE_TRACKING__RECONCILE_AFTER_S``: each is read back and fetched once (the
fetch fails, so each stays unfinished, its next fetch due later). No broker: a stand-in
acknowledges what the tracker publishes and rebuilds a send it reads back. Printed after each
stage: the memory ``tracemalloc`` sees above what it saw before the first send (after a full
collection), per send. Everything the owner keeps is in it: the packed sends, the whole sends
kept at hand, the reconciling schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, cast

from bridge.config import KafkaSettings, TrackingSettings
from bridge.kafka.records import Record
from bridge.tracking.book import EVENT, SEND, event_key
from bridge.tracking.send import Event, TrackedSend
from bridge.tracking.tracker import DeliveryTracker, _Writes
from bridge.twilio.accounts import Accounts
from tests.helpers import ACCOUNT, CREDENTIALS

SETTINGS = TrackingSettings(partitions=1)
START = 1_800_000_000.0
# Offsets of the states the tracker writes: apart from those of the records read (3 a send).
STATES_FROM = 10**9


def _token(n: int) -> str:
    """The token of send ``n``: 24 characters, like ``new_token``'s, that name ``n``."""
    return base64.urlsafe_b64encode(n.to_bytes(18, "big")).decode()


def _number(token: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(token), "big")


def _send(n: int, metadata_bytes: int) -> TrackedSend:
    metadata: dict[str, Any] = {"order": f"ORD-{n:06d}"}
    if metadata_bytes:
        metadata["note"] = "x" * metadata_bytes
    return TrackedSend(
        token=_token(n),
        request_id=f"order-{n:06d}-sms",
        key=f"customer-{n:06d}".encode(),
        metadata=metadata,
        resource="message",
        account_sid=ACCOUNT,
        credential="default",
        created_at=START,
    )


def _sid(n: int) -> str:
    return f"SM{n:032x}"


class _StateTopic:
    """The broker, as the tracker sees it: each record it publishes acknowledged at once (a
    state of send n at offset ``STATES_FROM`` + n), and a send read back from where it lies:
    rebuilt, not kept, so that the memory measured is the tracker's alone."""

    def __init__(self, metadata_bytes: int) -> None:
        self.metadata_bytes = metadata_bytes
        self.states = 0
        self.events_gone = 0

    async def publish(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        partition: int | None = None,
    ) -> tuple[int, int]:
        if topic != SETTINGS.state_topic or key is None:
            return 0, 0
        if b"/" in key:  # an event's tombstone
            self.events_gone += 1
            return partition or 0, 0
        self.states += 1
        return partition or 0, STATES_FROM + _number(key.decode())

    async def read(self, partition: int, offset: int) -> Record | None:
        n = offset // 3 if offset < STATES_FROM else offset - STATES_FROM
        send = _send(n, self.metadata_bytes)
        if offset >= STATES_FROM:  # the state written after the 'sent' callback, its last
            send = replace(send, sid=_sid(n), status="sent", sequence=1, applied=3 * n + 2)
        return Record("s", partition, offset, send.token.encode(), send.to_json(), ())

    async def stop(self) -> None:
        pass


class _Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def _records(sends: int, metadata_bytes: int) -> Iterator[list[Record]]:
    """Per send, the state topic's records of it: the send, Twilio's answer, a callback."""
    for n in range(sends):
        send = _send(n, metadata_bytes)
        answer = Event("answer", account_sid=ACCOUNT, sid=_sid(n))
        params = {"AccountSid": ACCOUNT, "MessageSid": _sid(n), "MessageStatus": "sent"}
        callback = Event("callback", account_sid=ACCOUNT, params=params)
        token, offset = send.token, 3 * n
        batch = [Record("s", 0, offset, token.encode(), send.to_json(), (("kind", SEND),))]
        for i, event in enumerate((answer, callback), 1):
            key = event_key(token, f"{i:012x}")
            batch.append(Record("s", 0, offset + i, key, event.to_json(), (("kind", EVENT),)))
        yield batch


def _at() -> str:
    return "2027-01-15T08:00:00.000Z"


class _Fetches:
    """Twilio, as reconciling sees it: every fetch fails (the send stays unfinished)."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, send: TrackedSend) -> dict[str, Any] | None:
        assert send.sid == _sid(_number(send.token)), send  # the whole send, read back
        self.count += 1
        return None


def _used(baseline: int) -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - baseline


async def measure(sends: int, metadata_bytes: int) -> list[tuple[str, float]]:
    """Bytes per send after each stage."""
    clock = _Clock()
    topic = _StateTopic(metadata_bytes)
    fetch_with = cast(Any, (Accounts(CREDENTIALS), None, None, None))
    tracker = DeliveryTracker(SETTINGS, KafkaSettings(), cast(Any, topic), fetch_with, clock)
    fetches = _Fetches()
    tracker._fetch = fetches  # type: ignore[method-assign]
    tracker._lookup = cast(Any, topic)
    book = tracker.book
    book.caught_up(0)  # the partition is live
    gc.collect()
    baseline = tracemalloc.get_traced_memory()[0]
    for batch in _records(sends, metadata_bytes):
        writes = _Writes()  # as the owner's turn does: the batch's writes together
        for record in batch:
            await tracker._recall(book.wanted(record))
            for change in book.read(record, _at):
                tracker._settle(change, "callback", writes)
            if book.spent(record):
                writes.spent.append((record.partition, record.key))
        await tracker._write(writes)
    await tracker._write(_Writes())  # as the next turn does: the last events' tombstones
    # One state per send: its batch's last (after 'sent') stands for the answer's too; then
    # both events' tombstones.
    counts = (len(book), topic.states, topic.events_gone)
    assert counts == (sends, sends, 2 * sends), counts
    figures = [("answered, 'sent' published", _used(baseline) / sends)]
    clock.now = START + SETTINGS.reconcile_after_s + 1
    while fetches.count < sends or tracker._fetching:
        await tracker._reconcile()
        await asyncio.sleep(0)
    assert len(book) == sends and not tracker._due, (len(book), len(tracker._due))
    figures.append(("fetched once, next fetch scheduled", _used(baseline) / sends))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=100_000)
    parser.add_argument(
        "--metadata-bytes", type=int, default=0, help="a string this long added to metadata"
    )
    args = parser.parse_args()
    tracemalloc.start()
    started = time.monotonic()
    figures = asyncio.run(measure(args.sends, args.metadata_bytes))
    took = time.monotonic() - started
    print(f"{args.sends:,} tracked sends not yet final, metadata + {args.metadata_bytes} B:")
    for stage, per_send in figures:
        print(f"  {stage:<40} {per_send:7.0f} B per send")
    print(f"  ({took:.1f} s)")


if __name__ == "__main__":
    main()
