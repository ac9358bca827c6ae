"""Every request id started in the window, cluster-wide, in 5 bytes each: where it may have been.

Pure bookkeeping; the clock is the caller's. A replica keeps the exact outcome of ids only for
the log partitions it owns (``bridge.outbound.idempotency.log``); this filter is how it learns
that an id it never saw was started in another partition (a client resending under another
Kafka key). It answers with the partitions to look in, never with an outcome: a match that is
wrong costs one look-up in the log, never a wrong answer, and an id that was added is always
found until it expires.

An entry is a 32-bit fingerprint of the id's digest and the partition it was started in (one
byte), in one of 4,096 buckets chosen by 12 more bits of the digest: 44 bits decide a match,
so a million ids make a false match about once in 17 million questions, a hundred million once
in 175,000. Entries are kept in generations of a quarter of the window each, by the time they
were recorded; a generation goes as a whole once its last entry has expired, so an id is kept
from one window to a window and a quarter.
"""

from __future__ import annotations

import random
import struct
from collections import Counter

__all__ = ["IdFilter"]

_BUCKET_BITS = 12
_FINGERPRINT_BITS = 32
_SHIFT = 64 - _BUCKET_BITS - _FINGERPRINT_BITS
_FINGERPRINT = struct.Struct(">I")
_ENTRY = struct.Struct(">IB")  # fingerprint, partition (its low byte)
_SIZE = _ENTRY.size
_DIGEST = struct.Struct(">Q")
_MASK_64 = (1 << 64) - 1
_MASK_32 = (1 << 32) - 1
_GENERATIONS = 4


class IdFilter:
    """Request id digests of the last ``window_s`` seconds and the partitions each was started
    in (their low byte: with more than 256 partitions, a tag names every partition of that
    low byte)."""

    def __init__(self, window_s: float) -> None:
        self._window_ms = round(window_s * 1000)
        self._span_ms = max(1, self._window_ms // _GENERATIONS)
        # Generation number (recording time ÷ span) → its buckets.
        self._generations: dict[int, list[bytearray | None]] = {}
        # Per generation: the ids added, by the partition (its low byte) they were started in.
        self._counts: dict[int, Counter[int]] = {}
        # Which bucket a digest falls in depends on a secret odd multiplier, as in the index:
        # ids chosen to share a bucket would make every question a long scan.
        self._spread = random.getrandbits(64) | 1
        self._now_ms = 0

    def __len__(self) -> int:
        return sum(sum(counts.values()) for counts in self._counts.values())

    def count(self, partition: int) -> int:
        """The ids added for ``partition`` (its low byte) that have not gone yet."""
        return sum(counts[partition & 0xFF] for counts in self._counts.values())

    def add(self, key: int, partition: int, at: float) -> None:
        """The digest ``key`` was started in ``partition`` at ``at``."""
        self.add_all(_DIGEST.pack(key), partition, at)

    def add_all(self, digests: bytes, partition: int, at: float) -> None:
        """Every 8-byte digest in ``digests`` (a ``starts`` record's value) was started in
        ``partition`` at ``at``: the loop every replica runs for every id of the cluster."""
        buckets = self._generation(round(at * 1000))
        if buckets is None:
            return  # expired already
        whole = len(digests) - len(digests) % _DIGEST.size
        spread, pack, tag = self._spread, _ENTRY.pack, partition & 0xFF
        for (key,) in _DIGEST.iter_unpack(digests[:whole]):
            spread_key = key * spread & _MASK_64
            index = spread_key >> (64 - _BUCKET_BITS)
            entry = pack(spread_key >> _SHIFT & _MASK_32, tag)
            bucket = buckets[index]
            if bucket is None:
                buckets[index] = bytearray(entry)
            else:
                bucket += entry
        self._counts[round(at * 1000) // self._span_ms][tag] += whole // _DIGEST.size

    def tags(self, key: int, now: float) -> set[int]:
        """The low bytes of the partitions ``key`` may have been started in within the window
        (empty: certainly nowhere)."""
        self.tick(now)
        spread_key = key * self._spread & _MASK_64
        index = spread_key >> (64 - _BUCKET_BITS)
        wanted = _FINGERPRINT.pack(spread_key >> _SHIFT & _MASK_32)
        found: set[int] = set()
        for buckets in self._generations.values():
            bucket = buckets[index]
            if bucket is None:
                continue
            pos = bucket.find(wanted)
            while pos >= 0:
                if pos % _SIZE == 0:  # not the end of one entry and the start of the next
                    found.add(bucket[pos + _SIZE - 1])
                pos = bucket.find(wanted, pos + 1)
        return found

    def tick(self, now: float) -> None:
        """Let time pass: generations whose every entry has expired by ``now`` go."""
        now_ms = round(now * 1000)
        if now_ms <= self._now_ms:
            return
        self._now_ms = now_ms
        for number in [n for n in self._generations if self._expired(n)]:
            del self._generations[number]
            del self._counts[number]

    def _expired(self, number: int) -> bool:
        return (number + 1) * self._span_ms + self._window_ms <= self._now_ms

    def _generation(self, at_ms: int) -> list[bytearray | None] | None:
        number = at_ms // self._span_ms
        buckets = self._generations.get(number)
        if buckets is None:
            if self._expired(number):
                return None
            buckets = self._generations[number] = [None] * (1 << _BUCKET_BITS)
            self._counts[number] = Counter()
        return buckets
