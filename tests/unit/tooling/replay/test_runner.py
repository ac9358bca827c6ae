"""The replay's pacing and progress bar (its Kafka side is tested on Tansu, in
tests/integration/test_replay.py)."""

from __future__ import annotations

import io

from bridge.tooling.replay.runner import Pacer, Progress
from bridge.tooling.replay.selection import Replay, Skip, Tally


def test_the_pacer_spaces_sends_evenly() -> None:
    now = [100.0]
    pacer = Pacer(4, lambda: now[0])
    assert [pacer.delay() for _ in range(3)] == [0.0, 0.25, 0.5]
    now[0] += 2  # a slow stretch does not earn a burst beyond the pace
    assert pacer.delay() == 0.0
    assert pacer.delay() == 0.25


def test_no_rate_never_waits() -> None:
    pacer = Pacer(None, lambda: 0.0)
    assert {pacer.delay() for _ in range(100)} == {0.0}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_a_bar_on_a_terminal_only() -> None:
    tally = Tally()
    tally.count(Replay("t", None, b"{}", "a", "twilio"))
    tally.count(Skip("not retryable"))
    terminal = Terminal()
    Progress(terminal, total=4).show(tally, final=True)
    assert terminal.getvalue() == (f"\r[{'#' * 15:<30}]  50%  2/4 read, 1 replayed, 1 skipped\n")
    pipe = io.StringIO()
    Progress(pipe, total=4).show(tally, final=True)
    assert pipe.getvalue() == ""
