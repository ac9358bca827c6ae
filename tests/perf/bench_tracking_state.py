"""Memory an owner holds per tracked send not yet final (issue 16: at most 300 bytes, measured
at 100,000 of them).

    .venv/bin/python -m tests.perf.bench_tracking_state               # 100,000 sends, ~30 s
    .venv/bin/python -m tests.perf.bench_tracking_state --sends 10000 --metadata-bytes 200

The real ``DeliveryTracker`` (no broker: its publisher answers at once with a made-up place)
reads, for each send, the records its state partition holds as the bridge writes them: the
send (the README's example request, a request id, key and ``metadata`` of its own), Twilio's
answer (a SID) and a ``sent`` callback. Then the sends are older than
``BRIDGE_TRACKING__RECONCILE_AFTER_S``: each is fetched once (the fetch answers nothing, so
each stays unfinished with its next fetch scheduled). Printed after each stage: the memory
``tracemalloc`` sees above what it saw before the first send (after a full collection), per
send. Everything the owner keeps is in it: the book, the reconciling schedule, any cache.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any, cast

from bridge.config import KafkaSettings, TrackingSettings
from bridge.kafka.producer import Publisher
from bridge.kafka.records import Record
from bridge.tracking.book import EVENT, SEND, event_key
from bridge.tracking.correlation import new_token
from bridge.tracking.send import Event, TrackedSend
from bridge.tracking import tracker as tracking_tracker
from bridge.tracking.tracker import DeliveryTracker
from bridge.twilio.accounts import Accounts
from tests.helpers import ACCOUNT, CREDENTIALS

SETTINGS = TrackingSettings(partitions=1)
START = 1_800_000_000.0


class _Publisher:
    """Acknowledges every record at once, at the next offset of its topic."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}

    async def publish(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        partition: int | None = None,
    ) -> tuple[int, int]:
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        return partition or 0, offset


class _Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def _records(sends: int, metadata_bytes: int) -> Iterator[list[Record]]:
    """Per send, the state topic's records of it: the send, Twilio's answer, a callback."""
    offset = 0
    for n in range(sends):
        token = new_token()
        sid = f"SM{n:032x}"
        metadata: dict[str, Any] = {"order": f"ORD-{n:06d}"}
        if metadata_bytes:
            metadata["note"] = "x" * metadata_bytes
        send = TrackedSend(
            token=token,
            request_id=f"order-{n:06d}-sms",
            key=f"customer-{n:06d}".encode(),
            metadata=metadata,
            resource="message",
            account_sid=ACCOUNT,
            credential="default",
            created_at=START,
        )
        answer = Event("answer", account_sid=ACCOUNT, sid=sid)
        params = {"AccountSid": ACCOUNT, "MessageSid": sid, "MessageStatus": "sent"}
        callback = Event("callback", account_sid=ACCOUNT, params=params)
        batch = [Record("s", 0, offset, token.encode(), send.to_json(), (("kind", SEND),))]
        for i, event in enumerate((answer, callback), 1):
            key = event_key(token, f"{i:012x}")
            batch.append(Record("s", 0, offset + i, key, event.to_json(), (("kind", EVENT),)))
        offset += len(batch)
        yield batch


def _at() -> str:
    return "2027-01-15T08:00:00.000Z"


async def _fetch_nothing(_: TrackedSend) -> dict[str, Any] | None:
    return None


def _used(baseline: int) -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - baseline


async def measure(sends: int, metadata_bytes: int) -> list[tuple[str, float]]:
    """Bytes per send after each stage."""
    clock = _Clock()
    accounts = Accounts(CREDENTIALS)
    fetch_with = cast(Any, (accounts, None, None, None))
    publisher = cast(Publisher, _Publisher())
    tracker = DeliveryTracker(SETTINGS, KafkaSettings(), publisher, fetch_with, clock)
    tracker._fetch = _fetch_nothing  # type: ignore[method-assign]
    book = tracker.book
    await tracker._carry_out(book.caught_up(0, _at))  # the partition is live
    gc.collect()
    baseline = tracemalloc.get_traced_memory()[0]
    for batch in _records(sends, metadata_bytes):
        for record in batch:
            await tracker._carry_out(book.read(record, _at))
    figures = [("answered, 'sent' published", _used(baseline) / sends)]
    assert len(book) == sends, len(book)
    clock.now = START + SETTINGS.reconcile_after_s + 1
    # Every send fetched in one turn (the tracker starts 16 at a time, over many turns).
    tracking_tracker._MAX_FETCHES = sends
    await tracker._reconcile()
    await asyncio.sleep(0)
    await tracker._reconcile()
    assert not tracker._fetching
    figures.append(("fetched once, next fetch scheduled", _used(baseline) / sends))
    assert len(book) == sends, len(book)
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
