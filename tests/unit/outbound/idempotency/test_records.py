"""The idempotency log's record formats (``bridge.outbound.idempotency.records``)."""

from __future__ import annotations

import struct

from bridge.outbound.idempotency.records import (
    ANSWER,
    ANSWERS_FROM,
    STARTS,
    STATE,
    answers,
    answers_from,
    batch_key,
    digests,
    header,
    starts_headers,
)


def test_a_start_says_where_its_answers_begin() -> None:
    headers = starts_headers(1234)
    assert header(headers, STATE) == STARTS
    assert answers_from(header(headers, ANSWERS_FROM)) == 1234
    assert answers_from(None) is None and answers_from(b"\x01") is None  # no header, not ours


def test_digests_and_answers_are_read_back_and_a_cut_short_tail_is_not() -> None:
    assert list(digests(struct.pack(">QQ", 1, 2) + b"\x07")) == [1, 2]
    value = ANSWER.pack(5, 2) + b"{}" + ANSWER.pack(6, 3) + b"[1]" + ANSWER.pack(7, 9) + b"x"
    assert [(key, value[start:end]) for key, start, end in answers(value)] == [
        (5, b"{}"),
        (6, b"[1]"),
    ]


def test_every_batch_has_a_key_of_its_own() -> None:
    assert batch_key(STARTS).startswith(b"\0starts/") and batch_key(STARTS) != batch_key(STARTS)
