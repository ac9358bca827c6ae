"""The soak's short form (``python -m tests.perf.soak`` is the long one): half a minute of
steady, mixed load on the real bridge process, as short as CI's time asks. Nothing may be
lost, and once the load is over the bridge must hold no more descriptors and tasks than its
pools and clients explain."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.perf.soak import MOCK_ARGS, soak

pytestmark = pytest.mark.long

SECONDS = 30
# What may stay open after the load: connections to the mock (the harness's pool of 32) and
# to the broker. A descriptor or task left behind per request would be thousands here.
POOLS = 64


async def test_steady_mixed_load_loses_nothing_and_leaks_nothing(
    tansu: Any, mock: Callable[..., str], tmp_path: Path, show: Callable[[str], None]
) -> None:
    base_url = mock(*MOCK_ARGS)
    result = await soak(
        tansu.bootstrap_servers,
        base_url,
        tmp_path,
        seconds=SECONDS,
        interval_s=10,
        broker_pid=tansu.pid,
    )
    show("\n".join(s.line() for s in result.samples) + "\n" + result.summary())
    assert result.sent > 0 and result.lost == 0
    assert set(result.statuses) <= {"ok", "twilio", "rate_limited"}, result.statuses
    # 503 only when Kafka is slow to acknowledge on a loaded machine; never a refusal.
    assert set(result.webhooks) <= {200, 503} and result.webhooks[200] > 0
    assert result.idle_fds_after - result.idle_fds_before < POOLS
    assert result.idle_tasks_after - result.idle_tasks_before < POOLS
