"""The idempotency log's records: what a replica writes before and after a send, and how any
record of the log is read back.

Two topics, both partitioned like the request topics (partition p of a request topic writes
to partition p modulo the log's partition count):

* ``BRIDGE_DEDUPE__TOPIC``, the starts: ``state: starts`` records whose value is the 8-byte
  digests of the request ids about to be sent, one after another, and whose header
  ``answers-from`` (8 bytes) is the offset of the answers partition of the same number from
  which their answers will be found. Every replica reads all of it: 8 bytes an id.
* ``BRIDGE_DEDUPE__ANSWERS_TOPIC``, the answers: ``state: answers`` records, each answer the
  id's digest, the reply's length and the reply. A replica reads the partitions it owns.

Each record has a key of its own (a compacted topic needs one). Records of the single-topic
format are still read from the starts topic, where that format put everything: ``starts``
without ``answers-from``, ``answers``, and ``started`` / ``answered`` records keyed by the id.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator

__all__ = [
    "ANSWER",
    "ANSWERED",
    "ANSWERS",
    "ANSWERS_FROM",
    "DIGEST",
    "STARTED",
    "STARTS",
    "STATE",
    "answers",
    "answers_from",
    "batch_key",
    "digests",
    "header",
    "starts_headers",
]

STATE = "state"
STARTED = b"started"
STARTS = b"starts"
ANSWERED = b"answered"
ANSWERS = b"answers"
ANSWERS_FROM = "answers-from"
DIGEST = struct.Struct(">Q")
# An answer in a batch: the id's digest and the reply's length, then the reply.
ANSWER = struct.Struct(">QI")
_OFFSET = struct.Struct(">q")


def batch_key(state: bytes) -> bytes:
    """A key of its own for a batch record: compaction keeps every batch until the window
    ends."""
    return b"\0" + state + b"/" + os.urandom(8)


def starts_headers(answers_from: int) -> list[tuple[str, bytes]]:
    """The headers of a ``starts`` record whose answers lie at or after ``answers_from``."""
    return [(STATE, STARTS), (ANSWERS_FROM, _OFFSET.pack(answers_from))]


def header(headers: Iterable[tuple[str, bytes]], name: str) -> bytes | None:
    """The value of header ``name``, if the record has it."""
    for key, value in headers:
        if key == name:
            return value
    return None


def answers_from(value: bytes | None) -> int | None:
    """The offset an ``answers-from`` header holds (None: no header, or not one of ours)."""
    if value is None or len(value) != _OFFSET.size:
        return None
    offset: int = _OFFSET.unpack(value)[0]
    return offset


def digests(value: bytes) -> Iterator[int]:
    """The digests of a ``starts`` record (a cut-short tail is not one)."""
    whole = len(value) - len(value) % DIGEST.size
    return (key for (key,) in DIGEST.iter_unpack(value[:whole]))


def answers(value: bytes) -> list[tuple[int, int, int]]:
    """The answers in a batch: each id's digest and where its reply lies in ``value``."""
    found = []
    pos, size, end = 0, ANSWER.size, len(value)
    while pos + size <= end:
        key, length = ANSWER.unpack_from(value, pos)
        start = pos + size
        pos = start + length
        if pos > end:
            break  # cut short: not written by this code
        found.append((key, start, pos))
    return found
