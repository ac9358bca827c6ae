"""What happened before to a request id: never seen, started (outcome unknown) or answered.

Pure bookkeeping; the clock is the caller's. A request that changes something at Twilio
(POST, PUT, PATCH, DELETE) is recorded as *started* before it is sent and *answered* once its
reply exists, so a redelivery or a client's resend within the window is answered without
calling Twilio again. Ids are kept as 8-byte digests with when and where their answer lies in
Kafka, 24 bytes in a bytearray: the replies themselves stay in Kafka.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Answered",
    "IdempotencyIndex",
    "IdempotencyStore",
    "Prior",
    "Started",
    "changes_state",
    "digest",
]

# GET and HEAD only read: sending them twice does no harm, so they are not recorded.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def changes_state(method: str) -> bool:
    """True for methods whose second call could do something twice at Twilio."""
    return method.upper() not in _SAFE_METHODS


def digest(request_id: str) -> int:
    """The id as a 64-bit number: collisions are vanishingly rare at any real volume."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Started:
    """Sent (or about to be) and not answered: a process died in between."""

    at: float


@dataclass(frozen=True, slots=True)
class Answered:
    """Answered; the first reply is in the outcome topic at ``partition``/``offset``."""

    at: float
    partition: int
    offset: int


Prior = Started | Answered

# An entry is 24 bytes in its bucket's bytearray: the digest, when (ms), and where the answer
# is (partition << 48 | offset + 1; 0 while only started). No Python object per entry: a
# dict of tuples took ~260 bytes per id, a dict of packed ints ~130, this ~50 at 100,000
# ids and 24 at millions (measured with tracemalloc).
_ENTRY = struct.Struct(">QqQ")
_SIZE = _ENTRY.size
_KEY = struct.Struct(">Q")
_AT = struct.Struct(">q")
_OFFSET_BITS = 48
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
_PARTITION_MASK = 0xFFFF
# Digests are uniform, so buckets fill evenly. A bucket holds 256 entries on average at most
# (6 KB: one C-speed find, about a microsecond); past that there are four times as many,
# filled from the old ones a few at a time, so that no write stops the event loop to move
# millions of entries. A used bucket costs ~100 bytes, so an index starts small: 4,096
# buckets, or as many as the ids it expects need.
_PER_BUCKET = 256
_MIN_BITS = 12
_MAX_BITS = 24
_MOVED_PER_WRITE = 8
_MASK_64 = (1 << 64) - 1


class IdempotencyIndex:
    """Request ids of the last ``window_s`` seconds and what became of each.

    Entries sit in their bucket in about the order they were recorded, so the expired ones
    are cut from a bucket's front; a cursor cleans one bucket per write. An expired entry
    may linger a while in memory, never in answers.
    """

    def __init__(self, window_s: float, expected: int = 0) -> None:
        self.window_s = window_s
        self._window_ms = round(window_s * 1000)
        self._bits = _MIN_BITS
        while _PER_BUCKET << self._bits < expected and self._bits < _MAX_BITS:
            self._bits += 2
        self._buckets: list[bytearray | None] = [None] * (1 << self._bits)
        # While the buckets grow: the old ones, each None once its entries moved, and how
        # many of them the steady move has passed.
        self._old: list[bytearray | None] | None = None
        self._moved = 0
        # Which bucket a digest falls in depends on a secret odd multiplier: ids picked to
        # share one bucket (easily found for 16 bits) would make every look-up a long scan.
        self._spread = random.getrandbits(64) | 1
        self._sweep = 0  # the next bucket the cursor cleans
        self._count = 0
        # The latest "now" the caller gave: entries are cut by the local clock only, never by
        # a record's timestamp (another replica's clock may run ahead).
        self._now_ms = 0

    def __len__(self) -> int:
        return self._count

    def record_started(self, key: int, at: float) -> None:
        """The digest ``key`` started at ``at``, unless answered later than that."""
        at_ms = round(at * 1000)
        bucket, pos = self._find(key)
        if pos >= 0:
            assert bucket is not None
            _, known_ms, where = _ENTRY.unpack_from(bucket, pos)
            if where and known_ms + self._window_ms > at_ms:
                return  # an answer stands
            if not where and known_ms >= at_ms:
                return  # the same start, read back from the topic
        self._put(key, at_ms, 0, bucket, pos)

    def record_answered(self, key: int, at: float, partition: int, offset: int) -> None:
        """The digest ``key`` answered at ``at``, the reply at ``partition``/``offset``; an
        answer is never undone by a later start."""
        where = (partition & _PARTITION_MASK) << _OFFSET_BITS | (offset + 1)
        at_ms = round(at * 1000)
        bucket, pos = self._find(key)
        if pos < 0:
            self._put(key, at_ms, where, bucket, pos)
            return
        assert bucket is not None
        if _ENTRY.unpack_from(bucket, pos)[2] != where:  # else: the same answer, read back
            # In place: the start it replaces came seconds earlier, so the bucket stays in
            # about the order of recording, and no bytes move.
            _ENTRY.pack_into(bucket, pos, key, at_ms, where)

    def load_answered(self, keys: Iterable[int], at: float, partition: int, offset: int) -> None:
        """``record_answered`` for answers read while the index is first filled, when no
        entry of theirs can be here yet: each is added without looking for one (an id
        answered twice has two entries, and the first found is the first answer)."""
        where = (partition & _PARTITION_MASK) << _OFFSET_BITS | (offset + 1)
        at_ms, pack, buckets, spread = round(at * 1000), _ENTRY.pack, self._buckets, self._spread
        shift, moving, added = 64 - self._bits, self._old is not None, 0
        for key in keys:
            index = (key * spread & _MASK_64) >> shift
            if moving:
                self._move(index >> 2)
            bucket = buckets[index]
            if bucket is None:
                buckets[index] = bytearray(pack(key, at_ms, where))
            else:
                bucket += pack(key, at_ms, where)
            added += 1
        self._count += added
        self._after_write()

    def prior(self, request_id: str, now: float) -> Prior | None:
        """What happened to ``request_id`` within the window before ``now``, if anything."""
        return self.prior_of(digest(request_id), now)

    def prior_of(self, key: int, now: float) -> Prior | None:
        """``prior`` for a digest."""
        self.tick(now)
        self._clean(self._bucket(key))
        bucket, pos = self._find(key)
        if pos < 0:
            return None
        assert bucket is not None
        _, at_ms, where = _ENTRY.unpack_from(bucket, pos)
        if at_ms + self._window_ms <= self._now_ms:
            return None
        if not where:
            return Started(at_ms / 1000)
        return Answered(at_ms / 1000, where >> _OFFSET_BITS, (where & _OFFSET_MASK) - 1)

    def tick(self, now: float) -> None:
        """Let time pass: entries expired by ``now`` may go, a few buckets at a time."""
        now_ms = round(now * 1000)
        if now_ms > self._now_ms:
            self._now_ms = now_ms

    def _bucket(self, key: int) -> int:
        return (key * self._spread & _MASK_64) >> (64 - self._bits)

    def _find(self, key: int) -> tuple[bytearray | None, int]:
        """The key's bucket and its entry's position there (-1: none)."""
        index = self._bucket(key)
        if self._old is not None:
            self._move(index >> 2)
        bucket = self._buckets[index]
        if bucket is None:
            return None, -1
        wanted = _KEY.pack(key)
        pos = bucket.find(wanted)
        while pos >= 0 and pos % _SIZE:  # found inside another entry's fields
            pos = bucket.find(wanted, pos + 1)
        return bucket, pos

    def _put(self, key: int, at_ms: int, where: int, bucket: bytearray | None, pos: int) -> None:
        entry = _ENTRY.pack(key, at_ms, where)
        if bucket is None:
            self._buckets[self._bucket(key)] = bytearray(entry)
            self._count += 1
        elif pos >= 0:
            # Moved to the end: entries stay in about the order they were recorded.
            del bucket[pos : pos + _SIZE]
            bucket += entry
        else:
            bucket += entry
            self._count += 1
        self._after_write()

    def _after_write(self) -> None:
        # One bucket cleaned per write: each is visited once every len(buckets) writes.
        self._clean(self._sweep)
        self._sweep = (self._sweep + 1) % len(self._buckets)
        if self._old is not None:
            for old in range(self._moved, min(self._moved + _MOVED_PER_WRITE, len(self._old))):
                self._move(old)
            self._moved += _MOVED_PER_WRITE
            if self._moved >= len(self._old):
                self._old = None
        elif self._count > _PER_BUCKET << self._bits and self._bits < _MAX_BITS:
            self._old, self._moved, self._sweep = self._buckets, 0, 0
            self._bits += 2
            self._buckets = [None] * (1 << self._bits)

    def _move(self, old: int) -> None:
        """Spread old bucket ``old`` over its four new ones, in the order of its entries."""
        assert self._old is not None
        bucket = self._old[old]
        if bucket is None:
            return
        self._old[old] = None
        buckets = self._buckets
        for pos in range(0, len(bucket), _SIZE):
            index = self._bucket(_KEY.unpack_from(bucket, pos)[0])
            entry = bucket[pos : pos + _SIZE]
            moved = buckets[index]
            if moved is None:
                buckets[index] = entry
            else:
                moved += entry

    def _clean(self, index: int) -> None:
        """Cut expired entries from the front of bucket ``index``."""
        if self._old is not None:
            self._move(index >> 2)
        bucket = self._buckets[index]
        if bucket is None:
            return
        cut, end, horizon = 0, len(bucket), self._now_ms - self._window_ms
        while cut < end and _AT.unpack_from(bucket, cut + 8)[0] <= horizon:
            cut += _SIZE
        if cut == end:
            self._buckets[index] = None
        elif cut:
            del bucket[:cut]  # bytearray drops its front without copying the rest
        self._count -= cut // _SIZE


class IdempotencyStore(Protocol):
    """Where outcomes are recorded and looked up (``bridge.outbound.idempotency.log``); each
    request is recorded under the partition of the request topic it was consumed from."""

    async def check(self, request_id: str, partition: int) -> Prior | None:
        """What became of ``request_id`` before, once any send of it here has finished."""

    async def begin(self, request_id: str, partition: int) -> None:
        """Record that ``request_id`` is about to be sent."""

    def finish(self, request_id: str, reply: bytes, partition: int) -> asyncio.Future[None]:
        """Record ``reply`` as the answer of ``request_id``: done once written (or refused),
        the id released either way."""

    def release(self, request_id: str) -> None:
        """End this process's send of ``request_id``."""

    async def first_reply(self, request_id: str, answered: Answered) -> bytes | None:
        """The reply recorded for an answered id (None if gone)."""
