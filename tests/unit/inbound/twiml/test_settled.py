"""What awaited ids settled to, for a while (``bridge.inbound.twiml.settled``)."""

from __future__ import annotations

from bridge.inbound.twiml.settled import Settled, SettledWindow

SAID = Settled("answered", "<Response/>", here=True)
FALLBACK = Settled("timeout", None, here=True)


def test_the_first_settlement_wins() -> None:
    window = SettledWindow(10)
    assert window.settle("a", SAID, now=0)
    assert not window.settle("a", FALLBACK, now=1)
    assert window.get("a", now=2) == SAID
    assert window.get("b", now=2) is None


def test_an_id_is_forgotten_once_its_time_is_over() -> None:
    window = SettledWindow(10)
    window.settle("a", SAID, now=0)
    window.settle("b", FALLBACK, now=5)
    assert window.get("a", now=9.9) == SAID
    assert window.get("a", now=10) is None
    assert len(window) == 1
    assert window.get("b", now=14.9) == FALLBACK
    assert window.get("b", now=15) is None and len(window) == 0
    # Forgotten, it may settle anew.
    assert window.settle("a", FALLBACK, now=20)
