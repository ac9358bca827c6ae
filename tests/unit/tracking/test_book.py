from __future__ import annotations

from dataclasses import replace

from bridge.kafka.records import Record
from bridge.tracking.book import EVENT, SEND, STATE, Book, Change
from bridge.tracking.send import Event, TrackedSend
from tests.helpers import ACCOUNT

TOKEN = "t" * 24
SEND_STATE = TrackedSend(TOKEN, "req-1", b"key", {"m": 1}, "message", ACCOUNT, "default", 0.0)


def _at() -> str:
    return "2026-01-01T00:00:00.000Z"


def _send(offset: int) -> Record:
    return Record("s", 0, offset, TOKEN.encode(), SEND_STATE.to_json(), (("kind", SEND),))


def _callback(offset: int, status: str, account: str = ACCOUNT) -> Record:
    params = {"AccountSid": account, "MessageSid": "SM1", "MessageStatus": status}
    event = Event("callback", account_sid=account, params=params)
    key = f"{TOKEN}/{offset}".encode()
    return Record("s", 0, offset, key, event.to_json(), (("kind", EVENT),))


def _state(offset: int, send: TrackedSend, by: str) -> Record:
    headers = (("kind", STATE), ("by", by.encode()))
    return Record("s", 0, offset, TOKEN.encode(), send.to_json(), headers)


def _catch_up(book: Book) -> list[Change]:
    """The changes of the events held until partition 0 was read to its end."""
    held = book.caught_up(0)
    changes = [book.apply(token, offset, event, _at) for offset, token, event, _ in held]
    return [change for change in changes if change is not None]


def _carry_out(book: Book, changes: list[Change]) -> list[tuple[str, int, bool]]:
    published = []
    for change in changes:
        if change.record is not None:
            published.append((change.record.status, change.record.sequence, change.record.final))
        book.settle(change)
    return published


def test_live_events_are_judged_in_order_and_a_final_one_finishes_the_send() -> None:
    book = Book("me")
    book.read(_send(0), _at)
    assert _carry_out(book, _catch_up(book)) == []
    published = []
    for offset, status in enumerate(("sent", "sent", "delivered", "sent"), 1):
        published += _carry_out(book, book.read(_callback(offset, status), _at))
    assert published == [("sent", 1, False), ("delivered", 2, True)]
    assert len(book) == 0  # finished: nothing left but the tombstone the owner writes


def test_a_callback_from_another_account_is_not_published() -> None:
    book = Book("me")
    book.read(_send(0), _at)
    _catch_up(book)
    assert _carry_out(book, book.read(_callback(1, "sent", "AC" + "9" * 32), _at)) == []


def test_a_new_owner_applies_only_the_events_the_last_state_does_not_cover() -> None:
    # The previous owner applied 'sent' (offset 1) and wrote its state (offset 2), then died
    # before applying 'delivered' (offset 3).
    after_sent = replace(SEND_STATE, status="sent", sequence=1, applied=1, sid="SM1")
    log = [_send(0), _callback(1, "sent"), _state(2, after_sent, "old"), _callback(3, "delivered")]
    book = Book("new")
    for record in log:
        assert book.read(record, _at) == []  # held until the partition is read to its end
    assert _carry_out(book, _catch_up(book)) == [("delivered", 2, True)]


def test_its_own_states_read_back_never_take_it_back() -> None:
    book = Book("me")
    book.read(_send(0), _at)
    _catch_up(book)
    _carry_out(book, book.read(_callback(1, "sent"), _at))
    stale = replace(SEND_STATE, applied=-1)
    book.read(_state(2, stale, "me"), _at)
    assert _carry_out(book, book.read(_callback(3, "sent"), _at)) == []  # still a duplicate


def test_a_refused_create_call_ends_the_send_without_a_record() -> None:
    book = Book("me")
    book.read(_send(0), _at)
    _catch_up(book)
    refused = Event("answer", account_sid=ACCOUNT, refused=True)
    record = Record("s", 0, 1, f"{TOKEN}/a".encode(), refused.to_json(), (("kind", EVENT),))
    changes = book.read(record, _at)
    assert [(c.gone, c.record) for c in changes] == [(True, None)]
    _carry_out(book, changes)
    assert len(book) == 0


def test_giving_up_publishes_expired_once() -> None:
    book = Book("me")
    book.read(_send(0), _at)
    _catch_up(book)
    change = book.expire(TOKEN, _at())
    assert change.record is not None and (change.record.status, change.record.final) == (
        "expired",
        True,
    )
    assert change.gone


def test_after_a_new_assignment_its_own_earlier_states_count() -> None:
    book = Book("me")
    book.read(_send(0), _at)
    _catch_up(book)
    _carry_out(book, book.read(_callback(1, "sent"), _at))
    after_sent = book.recent[TOKEN]
    book.reset()  # the partition is assigned again: read from the beginning
    for record in (_send(0), _callback(1, "sent"), _state(2, after_sent, "me")):
        book.read(record, _at)
    assert _carry_out(book, _catch_up(book)) == []  # 'sent' is not published again
    assert _carry_out(book, book.read(_callback(3, "delivered"), _at)) == [("delivered", 2, True)]
