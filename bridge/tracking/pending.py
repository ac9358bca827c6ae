"""What an owner keeps in memory of each tracked send not yet final. Pure.

The whole send (who asked: request id, Kafka key, ``metadata``; the SID) is in the state
topic, in the latest record under its token, which compaction keeps. In memory the owner keeps
only where that record is and what deciding on the send without it takes (whether it may be
fetched, when, whether a state read back is newer), packed into one ``bytes`` of 32: with the
token and its place in the book, about 200 bytes per send whatever its metadata.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from bridge.tracking.send import TrackedSend

__all__ = ["MAX_BACKOFF_S", "Pending"]

# where, applied, created_at, sequence, partition, flags, fetches
_LAYOUT = struct.Struct("<qqdIHBB")
_FINAL, _ANSWERED = 1, 2
MAX_BACKOFF_S = 6 * 3600.0  # the longest wait between two reconciling fetches


@dataclass(frozen=True, slots=True)
class Pending:
    """A tracked send as its owner keeps it in memory."""

    partition: int
    where: int  # offset of the send's latest whole record (send or state) in its partition
    applied: int  # offset of the last event applied to it
    sequence: int
    created_at: float
    final: bool
    answered: bool  # Twilio's answer gave its SID: it can be fetched
    fetches: int = 0  # reconciling fetches started

    @classmethod
    def of(cls, send: TrackedSend, partition: int, where: int, fetches: int = 0) -> Pending:
        """``send``, whose whole record is at ``where`` of ``partition``."""
        return cls(
            partition=partition,
            where=where,
            applied=send.applied,
            sequence=send.sequence,
            created_at=send.created_at,
            final=send.final,
            answered=send.sid is not None,
            fetches=fetches,
        )

    def pack(self) -> bytes:
        flags = (_FINAL if self.final else 0) | (_ANSWERED if self.answered else 0)
        return _LAYOUT.pack(
            self.where,
            self.applied,
            self.created_at,
            self.sequence,
            self.partition,
            flags,
            min(self.fetches, 255),
        )

    @classmethod
    def unpack(cls, packed: bytes) -> Pending:
        where, applied, created_at, sequence, partition, flags, fetches = _LAYOUT.unpack(packed)
        return cls(
            partition=partition,
            where=where,
            applied=applied,
            sequence=sequence,
            created_at=created_at,
            final=bool(flags & _FINAL),
            answered=bool(flags & _ANSWERED),
            fetches=fetches,
        )

    def fetched(self) -> Pending:
        """One more reconciling fetch started."""
        return replace(self, fetches=self.fetches + 1)

    def fetch_at(self, reconcile_after_s: float) -> float:
        """When the next reconciling fetch is due: ``reconcile_after_s`` after the send, then
        after waits that double from ``reconcile_after_s`` up to ``MAX_BACKOFF_S``."""
        at = self.created_at + reconcile_after_s
        for fetch in range(self.fetches):
            at += min(reconcile_after_s * 2**fetch, MAX_BACKOFF_S)
        return at
