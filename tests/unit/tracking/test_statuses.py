from __future__ import annotations

import pytest

from bridge.tracking.statuses import Progress, judge


@pytest.mark.parametrize(
    ("last", "final", "status", "expected"),
    [
        (None, False, "queued", ("publish", False)),
        ("queued", False, "sent", ("publish", False)),
        ("sent", False, "sent", ("duplicate", False)),
        ("sent", False, "queued", ("backwards", False)),
        ("sent", False, "delivered", ("publish", True)),
        ("delivered", True, "sent", ("backwards", False)),
        ("delivered", True, "delivered", ("duplicate", False)),
        ("delivered", True, "failed", ("after_final", False)),
        ("delivered", True, "read", ("publish", False)),
        ("failed", True, "read", ("after_final", False)),
        ("sent", False, "read", ("publish", True)),  # nothing follows read: it ends the send
        ("sent", False, "receiving", ("unknown_status", False)),
    ],
)
def test_message_statuses_move_forward_only(
    last: str | None, final: bool, status: str, expected: tuple[str, bool]
) -> None:
    assert judge(Progress("message", last, final), status) == expected


def test_a_calls_statuses_end_at_its_first_final_one() -> None:
    progress = Progress("call")
    published = []
    for status in ("initiated", "ringing", "in-progress", "answered", "ringing", "busy"):
        verdict, final = judge(progress, status)
        if verdict == "publish":
            published.append((status, final))
            progress = Progress("call", status, final)
    assert published == [
        ("initiated", False),
        ("ringing", False),
        ("in-progress", False),
        ("busy", True),
    ]
    assert judge(progress, "completed") == ("after_final", False)
