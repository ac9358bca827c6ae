"""The cluster-wide id filter (``bridge.outbound.idempotency.filter``): every id added is found
with its partition until it expires, an id never added almost never is, ~5 bytes an id."""

from __future__ import annotations

import struct
import tracemalloc

from bridge.outbound.idempotency.filter import IdFilter
from bridge.outbound.idempotency.index import digest

WINDOW = 100.0


def _digests(*ids: str) -> bytes:
    return b"".join(struct.pack(">Q", digest(i)) for i in ids)


def test_an_id_added_is_found_with_the_partitions_it_was_started_in() -> None:
    ids = IdFilter(WINDOW)
    ids.add_all(_digests(*(f"a-{n}" for n in range(5000))), partition=3, at=10)
    ids.add(digest("a-7"), partition=260, at=11)  # a second start, elsewhere: 260 & 0xFF
    assert all(ids.tags(digest(f"a-{n}"), now=20) == {3} for n in range(5000) if n != 7)
    assert ids.tags(digest("a-7"), now=20) == {3, 4}
    assert len(ids) == 5001 and ids.count(3) == 5000 and ids.count(4) == 1


def test_an_id_never_added_is_almost_never_taken_for_one() -> None:
    ids = IdFilter(WINDOW)
    ids.add_all(_digests(*(f"a-{n}" for n in range(100_000))), partition=0, at=10)
    # 44 bits decide: at 100,000 ids a false match comes about once in 175 million questions.
    assert not any(ids.tags(digest(f"b-{n}"), now=20) for n in range(100_000))


def test_ids_are_kept_for_the_window_and_go_with_their_generation() -> None:
    ids = IdFilter(WINDOW)
    ids.add(digest("old"), partition=1, at=10)  # generation [0, 25)
    ids.add(digest("new"), partition=1, at=60)  # generation [50, 75)
    assert ids.tags(digest("old"), now=124) == {1}  # its generation's last instant is 125
    assert ids.tags(digest("old"), now=125) == set()
    assert ids.tags(digest("new"), now=125) == {1} and len(ids) == 1
    ids.add(digest("late"), partition=1, at=1)  # read back after its generation went
    assert ids.tags(digest("late"), now=125) == set()


def test_a_cut_short_tail_is_not_an_id() -> None:
    ids = IdFilter(WINDOW)
    ids.add_all(_digests("a") + b"\x01\x02", partition=0, at=1)
    assert len(ids) == 1


def test_an_id_costs_about_five_bytes() -> None:
    ids = IdFilter(86_400)
    value = _digests(*(f"req-{n}" for n in range(200_000)))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, len(value), 400):
            ids.add_all(value[start : start + 400], partition=5, at=1000)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used / 200_000 < 7  # 5 bytes, the buckets' spare room and their headers
