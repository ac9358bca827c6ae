import random

import pytest

from bridge.kafka.offsets import PartitionOffsets


def test_commit_waits_for_the_lowest_unfinished_offset() -> None:
    offsets = PartitionOffsets()
    for off in (10, 11, 12, 13):
        offsets.add(off)
    offsets.complete(12)
    offsets.complete(11)
    assert offsets.committable() is None
    offsets.complete(10)
    assert offsets.committable() == 13
    offsets.committed(13)
    assert offsets.committable() is None
    assert len(offsets) == 1
    offsets.complete(13)
    assert offsets.committable() == 14


def test_offsets_must_increase() -> None:
    offsets = PartitionOffsets()
    offsets.add(5)
    with pytest.raises(ValueError):
        offsets.add(5)


def test_failed_commit_is_offered_again() -> None:
    offsets = PartitionOffsets()
    offsets.add(0)
    offsets.complete(0)
    assert offsets.committable() == 1
    assert offsets.committable() == 1  # not marked committed: offered again


def test_random_completion_order_never_commits_past_unfinished() -> None:
    rng = random.Random(7)
    offsets = PartitionOffsets()
    fetched = list(range(100, 400, 3))  # gaps, like compacted topics or transactions
    for off in fetched:
        offsets.add(off)
    order = fetched[:]
    rng.shuffle(order)
    done: set[int] = set()
    for off in order:
        offsets.complete(off)
        done.add(off)
        point = offsets.committable()
        if point is not None:
            offsets.committed(point)
            assert all(o in done for o in fetched if o < point)
            unfinished = [o for o in fetched if o not in done]
            assert not unfinished or point <= min(unfinished)
    assert offsets.committable() is None
    assert len(offsets) == 0
