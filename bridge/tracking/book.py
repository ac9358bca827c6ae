"""The owner's book of the tracked sends in its state partitions. Pure: times are the caller's.

The state topic holds, per token, the send (``kind: send``, written before the create call),
the owner's later states of it (``kind: state``, a tombstone once it is finished) and the
events learnt about it (``kind: event``: Twilio's answer, each callback), each under a key of
its own, tombstoned once a state stands for it (``spent``). One replica owns each partition
and is the only one that applies its events, in partition order, so two callbacks of one
send are never judged side by side.

A new owner reads its partitions from the beginning: sends and states are taken as they come,
events are held until the partition is read to its end, then applied unless the latest state
says they were (``applied`` is the offset of the last event applied to a send). Its own states
read back while the partition is live are ignored: its memory is ahead of them.

Memory holds each send packed (``Pending``: where its latest whole record is, and what deciding
without it takes), and the whole sends of the few learnt about last; the caller reads the
others back from the state topic when an event comes for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from bridge.contract.deliveries import DeliveryRecord
from bridge.kafka.records import Record
from bridge.tracking.pending import Pending
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

__all__ = ["EVENT", "RECENT", "SEND", "STATE", "Book", "Change", "Held", "event_key"]

log = logging.getLogger(__name__)

SEND = b"send"
STATE = b"state"
EVENT = b"event"
# Whole sends kept at hand besides the packed ones: the sends callbacks are coming for now.
RECENT = 2048
# An event read before its partition was read to its end: (offset, token, event, its key).
Held = tuple[int, str, Event, bytes | None]


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
    """The sends of the owned partitions, and the events held until a partition is read.

    Each send is kept as a packed ``Pending``; the whole ``TrackedSend`` of the last
    ``RECENT`` sends learnt about (read, recalled or changed) is kept besides, and the caller
    reads the others back from the state topic (``wanted``, then ``recall``) before an event
    is applied to them.
    """

    me: str  # this process's id, in the states it writes
    sends: dict[str, bytes] = field(default_factory=dict)  # token -> Pending, packed
    recent: dict[str, TrackedSend] = field(default_factory=dict)  # oldest first
    held: dict[int, list[Held]] = field(default_factory=dict)
    live: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.sends)

    def reset(self) -> None:
        """Forget everything: the partitions are being read again from the beginning."""
        self.sends.clear()
        self.recent.clear()
        self.held.clear()
        self.live.clear()

    def pending(self, token: str) -> Pending | None:
        packed = self.sends.get(token)
        return Pending.unpack(packed) if packed is not None else None

    def whole(self, token: str) -> TrackedSend | None:
        """The whole send of ``token`` when it is at hand (else it must be recalled)."""
        return self.recent.get(token)

    def wanted(self, record: Record) -> str | None:
        """The token whose whole send must be recalled before ``record`` is read, if any."""
        if not self._live_event(record):
            return None
        token = (record.key or b"").decode(errors="replace").split("/", 1)[0]
        return token if token in self.sends and token not in self.recent else None

    def recall(self, token: str, send: TrackedSend | None) -> None:
        """The whole send of ``token`` as read back from the state topic; None when its record
        is gone (it cannot be published for any more: forgotten)."""
        if send is None or send.token != token:
            log.warning("tracking: the state record of a tracked send is gone; forgetting it")
            self._drop(token)
        elif token in self.sends:
            self._remember(send)

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
        if kind not in (SEND, STATE) or (kind == STATE and mine):
            return []
        try:
            send = TrackedSend.from_json(record.value)
        except ValueError as exc:
            log.warning("tracking: ignoring a record of the state topic: %s", exc)
            return []
        known = self.pending(key)
        if (kind == SEND and known is None) or (kind == STATE and _newer(send, known)):
            fetches = known.fetches if known is not None else 0
            self._keep(send, Pending.of(send, record.partition, record.offset, fetches))
        return []

    def spent(self, record: Record) -> bool:
        """Whether ``record``, just read, is an event done with: applied (the send's next state
        stands for it) or of no send tracked here. An event held is spent once applied."""
        return self._live_event(record)

    def caught_up(self, partition: int) -> list[Held]:
        """The partition was read to its end, from now on live: the events held for it, to be
        applied in turn (``apply``), each send recalled first."""
        self.live.add(partition)
        return self.held.pop(partition, [])

    def apply(self, token: str, offset: int, event: Event, at: Callable[[], str]) -> Change | None:
        """What ``event`` at ``offset`` does to the send of ``token``, if anything."""
        pending = self.pending(token)
        if pending is None or offset <= pending.applied:
            return None  # finished, never tracked here, or applied before
        send = self.recent[token]  # recalled by the caller
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

    def settle(self, change: Change) -> None:
        """Keep the outcome of a change (its state still where it was until ``placed``), or
        forget a finished send."""
        pending = self.pending(change.token)
        if change.gone or pending is None:
            self._drop(change.token)
            return
        place = pending.where
        self._keep(change.send, Pending.of(change.send, pending.partition, place, pending.fetches))

    def placed(self, token: str, where: int) -> None:
        """The latest state of the send of ``token`` was written at offset ``where``."""
        pending = self.pending(token)
        if pending is not None and where > pending.where:
            self.sends[token] = replace(pending, where=where).pack()

    def fetched(self, token: str) -> None:
        """A reconciling fetch of the send of ``token`` started."""
        pending = self.pending(token)
        if pending is not None:
            self.sends[token] = pending.fetched().pack()

    def expire(self, token: str, at: str) -> Change:
        """The bridge gives up on a send (recalled first): a final ``expired`` record unless it
        had a final one."""
        send = self.recent[token]
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
            held = (record.offset, token, event, record.key)
            self.held.setdefault(record.partition, []).append(held)
            return []
        change = self.apply(token, record.offset, event, at)
        return [change] if change is not None else []

    def _live_event(self, record: Record) -> bool:
        """Whether ``record`` is an event of a live partition: applied as it is read."""
        kind = dict(record.headers).get("kind")
        return kind == EVENT and record.value is not None and record.partition in self.live

    def _keep(self, send: TrackedSend, pending: Pending) -> None:
        self.sends[send.token] = pending.pack()
        self._remember(send)

    def _remember(self, send: TrackedSend) -> None:
        self.recent.pop(send.token, None)
        self.recent[send.token] = send
        if len(self.recent) > RECENT:
            del self.recent[next(iter(self.recent))]

    def _drop(self, token: str) -> None:
        self.sends.pop(token, None)
        self.recent.pop(token, None)


def _newer(send: TrackedSend, known: Pending | None) -> bool:
    return known is None or (send.applied, send.sequence) > (known.applied, known.sequence)
