from __future__ import annotations

from bridge.tracking.pending import MAX_BACKOFF_S, Pending
from bridge.tracking.send import TrackedSend
from tests.helpers import ACCOUNT


def test_a_send_packs_into_32_bytes_and_back() -> None:
    send = TrackedSend("t" * 24, "r", b"k", {"m": "x" * 500}, "message", ACCOUNT, "d", 12.5)
    pending = Pending.of(send, 7, 123_456_789_012, fetches=3)
    packed = pending.pack()
    assert len(packed) == 32
    assert Pending.unpack(packed) == pending
    assert (pending.applied, pending.final, pending.answered) == (-1, False, False)


def test_fetches_are_due_after_waits_that_double_up_to_six_hours() -> None:
    pending = Pending(0, 0, -1, 0, created_at=100.0, final=False, answered=True)
    due = [pending.fetch_at(600)]
    for _ in range(7):
        pending = pending.fetched()
        due.append(pending.fetch_at(600))
    waits = [later - earlier for earlier, later in zip(due, due[1:], strict=False)]
    assert due[0] == 700.0
    assert waits == [600, 1200, 2400, 4800, 9600, 19200, MAX_BACKOFF_S]
