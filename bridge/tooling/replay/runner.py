"""Read the error topic and publish the chosen requests again, keeping the place in Kafka.

The replay reads every partition of the error topic up to the end it had when the run began
(what fails again later is left for the next run), from the committed offsets of its own
consumer group. It publishes a batch, waits for the broker's acknowledgements, then commits
the batch's offsets: an interrupted run goes on where it stopped, and at most the batch in
flight is sent again, under the same ids (``selection.replay_id`` is deterministic), so the
bridge's outbound dedupe answers such a duplicate once. A dry run commits nothing.

The partitions are assigned, not subscribed: no group join (which some brokers hold for
seconds) and no rebalance, and two replays with the same group would both read everything,
so run one at a time per group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bridge.config import KafkaSettings
from bridge.kafka.connection import connection_kwargs
from bridge.kafka.errors import kafka_errors
from bridge.tooling.replay.selection import Replay, Selection, Tally, decide

__all__ = ["Pacer", "Progress", "ReplayError", "ReplayOptions", "replay"]

# Records per fetch, and so per acknowledged and committed batch.
BATCH = 500


class ReplayError(Exception):
    """The replay cannot run as asked (the error topic does not exist)."""


@dataclass(frozen=True)
class ReplayOptions:
    """Everything a run needs besides the Kafka connection."""

    error_topic: str
    group: str
    selection: Selection
    new_ids: bool = False
    to: str | None = None
    rate: float | None = None  # records per second at most
    dry_run: bool = False


class Pacer:
    """At most ``rate`` sends per second, evenly spaced from the first; None: no limit."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1 / rate if rate else 0.0
        self._clock = clock
        self._next: float | None = None

    def delay(self) -> float:
        """Seconds to wait before the next send (which this call books)."""
        now = self._clock()
        at = now if self._next is None else max(self._next, now)
        self._next = at + self._interval
        return at - now

    async def wait(self) -> None:
        pause = self.delay()
        if pause > 0:
            await asyncio.sleep(pause)


class Progress:
    """A one-line progress bar, redrawn at most ten times a second; silent unless ``stream``
    is a terminal."""

    WIDTH = 30

    def __init__(self, stream: TextIO, total: int = 0) -> None:
        self._stream = stream
        self._on = stream.isatty()
        self.total = total
        self._drawn = 0.0

    def show(self, tally: Tally, *, final: bool = False) -> None:
        if not self._on or (not final and time.monotonic() - self._drawn < 0.1):
            return
        self._drawn = time.monotonic()
        share = min(tally.read / self.total, 1.0) if self.total else 1.0
        bar = "#" * round(share * self.WIDTH)
        line = (
            f"\r[{bar:<{self.WIDTH}}] {share:4.0%}  {tally.read}/{self.total} read, "
            f"{tally.replayed.total()} replayed, {tally.skipped.total()} skipped"
        )
        self._stream.write(line + ("\n" if final else ""))
        self._stream.flush()


async def _assign(consumer: AIOKafkaConsumer, topic: str) -> dict[TopicPartition, int]:
    """Every partition of ``topic``, assigned; the end offset of each, as of now."""
    await consumer.topics()  # metadata of every topic, so a missing one is known missing
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise ReplayError(f"the error topic {topic!r} does not exist")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
    return ends


def _confirm_ends(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], confirmed: set[TopicPartition]
) -> None:
    """Raise each partition's end to the high watermark of its first fetch.

    Tansu's ListOffsets can answer one short of a partition's true end (seen: 10 while the
    fetch's high watermark said 11, after a batch of ten records and one more), so a
    partition counts as read through only once a fetch has told its end.
    """
    for tp in ends.keys() - confirmed:
        highwater = consumer.highwater(tp)
        if highwater is not None:
            ends[tp] = max(ends[tp], highwater)
            confirmed.add(tp)


async def _copy(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer | None,
    ends: dict[TopicPartition, int],
    options: ReplayOptions,
    tally: Tally,
    out: TextIO,
    progress: Progress,
) -> None:
    """Read up to ``ends``; publish (or, dry, print) each replay; commit each batch."""
    pacer = Pacer(options.rate)
    starts = {tp: await consumer.position(tp) for tp in ends}
    confirmed: set[TopicPartition] = set()
    remaining = set(ends)
    while remaining:
        batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=BATCH)
        _confirm_ends(consumer, ends, confirmed)
        progress.total = sum(ends[tp] - starts[tp] for tp in ends)
        sent: list[asyncio.Future[object]] = []
        done: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            for record in records:
                if record.offset >= ends[tp]:
                    break
                outcome = decide(
                    record.value, options.selection, new_ids=options.new_ids, to=options.to
                )
                tally.count(outcome)
                done[tp] = record.offset + 1
                if isinstance(outcome, Replay):
                    await pacer.wait()
                    if producer is None:
                        out.write(f"{outcome.request_id} ({outcome.kind}) -> {outcome.topic}\n")
                    else:
                        sent.append(await _send(producer, outcome))
                progress.show(tally)
        if producer is not None and done:
            await asyncio.gather(*sent)
            await consumer.commit(done)
        remaining = {
            tp for tp in remaining if tp not in confirmed or await consumer.position(tp) < ends[tp]
        }


async def _send(producer: AIOKafkaProducer, replay: Replay) -> asyncio.Future[object]:
    """Queue one record; the future resolves once the broker acknowledged it."""
    future: asyncio.Future[object] = await producer.send(replay.topic, replay.value, key=replay.key)
    return future


async def replay(
    kafka: KafkaSettings, options: ReplayOptions, *, out: TextIO, progress: Progress
) -> Tally:
    """One run; returns its tally. Raises ``BrokerError`` when Kafka fails, ``ReplayError``
    when the error topic does not exist."""
    connection = connection_kwargs(kafka)
    consumer = AIOKafkaConsumer(
        **connection,
        group_id=options.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = None
    if not options.dry_run:
        producer = AIOKafkaProducer(
            **connection,
            acks="all" if kafka.acks == "all" else 1,
            enable_idempotence=kafka.idempotent_producer,
            max_request_size=kafka.max_request_size,
            linger_ms=5,
        )
    tally = Tally()
    with kafka_errors(f"replay of {options.error_topic}"):
        await consumer.start()
        try:
            if producer is not None:
                await producer.start()
            ends = await _assign(consumer, options.error_topic)
            progress.total = sum([end - await consumer.position(tp) for tp, end in ends.items()])
            await _copy(consumer, producer, ends, options, tally, out, progress)
            progress.show(tally, final=True)
        finally:
            if producer is not None:
                await producer.stop()
            await consumer.stop()
    return tally
