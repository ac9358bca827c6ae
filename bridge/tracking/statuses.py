"""Which status comes after which, and which ones end a send. Pure.

Twilio's status callbacks come at least once and in any order. A status is published only when
it moves the send forward: the same status again is a duplicate, an earlier one arrives late.
Statuses of one rank are alternatives (``delivered`` or ``failed``; ``in-progress`` is what
``answered`` is called in a callback).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.contract.deliveries import Resource

__all__ = ["EXPIRED", "FINAL", "RANKS", "Progress", "Verdict", "judge"]

RANKS: dict[Resource, dict[str, int]] = {
    "message": {
        "accepted": 0,
        "scheduled": 0,
        "queued": 1,
        "sending": 2,
        "sent": 3,
        "delivered": 4,
        "undelivered": 4,
        "failed": 4,
        "canceled": 4,
        # WhatsApp (and RCS) tell when the recipient read it: after delivered, not instead.
        "read": 5,
    },
    "call": {
        "queued": 0,
        "initiated": 1,
        "ringing": 2,
        "in-progress": 3,
        "answered": 3,
        "completed": 4,
        "busy": 4,
        "no-answer": 4,
        "failed": 4,
        "canceled": 4,
    },
}
FINAL: dict[Resource, frozenset[str]] = {
    "message": frozenset({"delivered", "undelivered", "failed", "canceled"}),
    "call": frozenset({"completed", "busy", "no-answer", "failed", "canceled"}),
}
# The status of the record that ends a send the bridge gave up on.
EXPIRED = "expired"

Verdict = Literal["publish", "duplicate", "backwards", "after_final", "unknown_status"]


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a send is: its last published status and whether a final one was published."""

    resource: Resource
    status: str | None = None
    final: bool = False


def judge(progress: Progress, status: str) -> tuple[Verdict, bool]:
    """Whether ``status`` is published after ``progress``, and if so whether it is final.

    ``read`` is the one status published after the final one (it follows ``delivered``); a
    ``read`` that comes first ends the send itself, since nothing follows it.
    """
    ranks = RANKS[progress.resource]
    rank = ranks.get(status)
    if rank is None:
        return "unknown_status", False
    last = ranks.get(progress.status, -1) if progress.status is not None else -1
    if rank < last:
        return "backwards", False
    if rank == last:
        # A different final status after the final one contradicts it: never published.
        alternative = progress.final and status != progress.status
        return ("after_final" if alternative else "duplicate"), False
    if progress.final:
        readable = progress.status == "delivered" and status == "read"
        return ("publish", False) if readable else ("after_final", False)
    return "publish", status in FINAL[progress.resource] or status == "read"
