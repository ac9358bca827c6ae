"""The owner's book of the tracked sends in its state partitions. Pure: times are the caller's.

The state topic holds, per token, the send (``kind: send``, written before the create call),
the owner's later states of it (``kind: state``, a tombstone once it is finished) and the
events learnt about it (``kind: event``: Twilio's answer, each callback), each under a key of
its own. One replica owns each partition and is the only one that applies its events, in
partition order, so two callbacks of one send are never judged side by side.

A new owner reads its partitions from the beginning: sends and states are taken as they come,
events are held until the partition is read to its end, then applied unless the latest state
says they were (``applied`` is the offset of the last event applied to a send). Its own states
read back while the partition is live are ignored: its memory is ahead of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from bridge.contract.deliveries import DeliveryRecord
from bridge.kafka.records import Record
from bridge.tracking.send import (
    Event,
    TrackedSend,
    answered,
    callback_status,
    expired,
    finished,
    learnt,
)
from bridge.tracking.statuses import Verdict

__all__ = ["SEND", "STATE", "EVENT", "Book", "Change", "event_key"]

log = logging.getLogger(__name__)

SEND = b"send"
STATE = b"state"
EVENT = b"event"


def event_key(token: str, nonce: str) -> bytes:
    """An event's key: its send's token and a nonce, so compaction never merges two events."""
    return f"{token}/{nonce}".encode()


@dataclass(frozen=True, slots=True)
class Change:
    """What the owner does after learning something: publish ``record`` (if any), then keep
    ``send`` as the state, or write a tombstone when it is finished (``gone``)."""

    token: str
    verdict: Verdict | str
    send: TrackedSend
    record: DeliveryRecord | None = None
    gone: bool = False


@dataclass
class Book:
    """The sends of the owned partitions, and the events held until a partition is read."""

    me: str  # this process's id, in the states it writes
    sends: dict[str, TrackedSend] = field(default_factory=dict)
    held: dict[int, list[tuple[int, str, Event]]] = field(default_factory=dict)
    live: set[int] = field(default_factory=set)
    partition_of: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sends)

    def reset(self) -> None:
        """Forget everything: the partitions are being read again from the beginning."""
        self.sends.clear()
        self.held.clear()
        self.live.clear()
        self.partition_of.clear()

    def read(self, record: Record, at: Callable[[], str]) -> list[Change]:
        """Take one record of the state topic; the changes to carry out (live partitions)."""
        headers = dict(record.headers)
        kind = headers.get("kind")
        key = (record.key or b"").decode(errors="replace")
        if kind == EVENT and record.value is not None:
            return self._event(record, key.split("/", 1)[0], at)
        # What this process wrote is behind its memory while the partition is live; after
        # a new assignment memory is empty and it counts like anyone's.
        mine = headers.get("by") == self.me.encode() and record.partition in self.live
        if record.value is None:
            if not mine:
                self._drop(key)
            return []
        if kind not in (SEND, STATE):
            return []
        try:
            send = TrackedSend.from_json(record.value)
        except ValueError as exc:
            log.warning("tracking: ignoring a record of the state topic: %s", exc)
            return []
        known = self.sends.get(key)
        if kind == SEND and known is None:
            self._keep(send, record.partition)
        elif kind == STATE and not mine and _newer(send, known):
            self._keep(send, record.partition)
        return []

    def caught_up(self, partition: int, at: Callable[[], str]) -> list[Change]:
        """The partition was read to its end: apply the events held for it, from now on live."""
        self.live.add(partition)
        changes = []
        for offset, token, event in self.held.pop(partition, []):
            change = self._apply(token, offset, event, at)
            if change is not None:
                changes.append(change)
        return changes

    def settle(self, change: Change) -> None:
        """Keep the outcome of a change carried out (or forget a finished send)."""
        if change.gone:
            self._drop(change.token)
        else:
            self.sends[change.token] = change.send

    def expire(self, token: str, at: str) -> Change:
        """The bridge gives up on a send: a final ``expired`` record unless it had a final one."""
        send = self.sends[token]
        if send.final:
            return Change(token, "expired", send, None, gone=True)
        record = expired(send, at)
        ended = replace(send, final=True, sequence=record.sequence, status=record.status)
        return Change(token, "expired", ended, record, gone=True)

    def _event(self, record: Record, token: str, at: Callable[[], str]) -> list[Change]:
        try:
            event = Event.from_json(record.value or b"")
        except ValueError as exc:
            log.warning("tracking: ignoring a record of the state topic: %s", exc)
            return []
        if record.partition not in self.live:
            self.held.setdefault(record.partition, []).append((record.offset, token, event))
            return []
        change = self._apply(token, record.offset, event, at)
        return [change] if change is not None else []

    def _apply(self, token: str, offset: int, event: Event, at: Callable[[], str]) -> Change | None:
        send = self.sends.get(token)
        if send is None or offset <= send.applied:
            return None  # finished, never tracked here, or applied before
        if event.type == "answer":
            after = answered(send, event, offset)
            if after is None:  # Twilio refused the create call: nothing will come
                return Change(token, "refused", send, None, gone=True)
            return Change(token, "answered", after)
        params = event.params or {}
        status = callback_status(send.resource, params)
        if event.account_sid != send.account_sid or status is None:
            return Change(token, "foreign", replace(send, applied=offset))
        verdict, after, record = learnt(
            send, status, params, source="callback", at=at(), offset=offset
        )
        return Change(token, verdict, after, record, gone=finished(after))

    def _keep(self, send: TrackedSend, partition: int) -> None:
        self.sends[send.token] = send
        self.partition_of[send.token] = partition

    def _drop(self, token: str) -> None:
        self.sends.pop(token, None)
        self.partition_of.pop(token, None)


def _newer(send: TrackedSend, known: TrackedSend | None) -> bool:
    return known is None or (send.applied, send.sequence) > (known.applied, known.sequence)
