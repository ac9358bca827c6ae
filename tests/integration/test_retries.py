"""Retries through the real bridge process against a mock that answers 429, 500, resets, slowly.

The mock counts every request by its ``I-Request-Id`` header, which the bridge forwards from
the Kafka record. So each reply's ``attempts`` can be checked against what reached the mock,
and a POST may only have been sent more than once when every earlier attempt was a 429.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ACCOUNT
from tests.support.harness import run_through_mock

MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT}/Messages"


def _envelopes(total: int) -> list[tuple[bytes | None, bytes | None]]:
    items: list[tuple[bytes | None, bytes | None]] = []
    for n in range(total):
        if n % 2:
            envelope: dict[str, Any] = {
                "id": f"get-{n}",
                "mode": "advanced",
                "method": "GET",
                "path": f"{MESSAGES}/SM{n:032d}.json",
            }
        else:
            envelope = {
                "id": f"post-{n}",
                "mode": "basic",
                "operation": "CreateMessage",
                "body": {"To": "+14155550100", "From": "+14155550101", "Body": str(n)},
            }
        envelope["request_headers"] = ["I-Request-Id"]
        key = envelope["id"].encode()
        items.append((key, json.dumps(envelope).encode()))
    return items


async def _run(
    tansu: Any, base_url: str, tmp_path: Path, total: int, **env: str
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    env = {
        "BRIDGE_RETRY__MAX_ATTEMPTS": "4",
        "BRIDGE_RETRY__BASE_DELAY_S": "0.01",
        "BRIDGE_RETRY__MAX_DELAY_S": "0.05",
        **env,
    }
    replies, stats = await run_through_mock(
        tansu.bootstrap_servers,
        base_url,
        tmp_path,
        _envelopes(total),
        env,
        lambda key: [("I-Request-Id", key or b"")],
    )
    return replies, stats


@pytest.mark.parametrize("retry_after", ["0", "-1"], ids=["retry-after", "no-retry-after"])
async def test_faults_end_in_the_expected_attempts_and_no_post_is_repeated_unsafely(
    tansu: Any, mock: Any, tmp_path: Path, retry_after: str
) -> None:
    base_url = mock(
        "--rate-429", "0.3", "--error-rate", "0.15", "--reset-rate", "0.1",
        "--retry-after", retry_after, "--seed", "11",
    )  # fmt: skip
    total = 300
    replies, stats = await _run(tansu, base_url, tmp_path, total)
    sent = Counter(stats["by_request_id"])
    # Every kind of fault was injected: server errors both ways, 429s, resets.
    assert {"500", "503", "429", "reset"} <= set(stats["faults"]), stats["faults"]
    outcomes: Counter[str] = Counter()
    for request_id, reply in replies.items():
        retried_for = [w for w in reply["warnings"] if w.startswith("attempt ")]
        assert len(retried_for) == reply["attempts"] - 1, reply
        if request_id.startswith("post-"):
            # Every attempt the reply counts reached the mock, and no other; a POST is only
            # sent again after a 429, which Twilio did not process.
            assert sent[request_id] == reply["attempts"], reply
            assert all("HTTP 429" in w for w in retried_for), reply
        else:
            # aiohttp itself resends an idempotent request once when a reused connection
            # turns out closed, so a GET may reach the mock more often than it was attempted.
            assert reply["attempts"] <= sent[request_id] <= 2 * reply["attempts"], reply
        kind = reply["error"]["kind"] if reply["error"] else "ok"
        outcomes[f"{request_id.split('-')[0]} {kind} after {reply['attempts']}"] += 1
    print(f"\n{total} requests, {sum(sent.values())} calls at the mock: {dict(outcomes)}")
    posts = [r for i, r in replies.items() if i.startswith("post-")]
    gets = [r for i, r in replies.items() if i.startswith("get-")]
    # With these fault rates both kinds of outcome occur; the seed makes it repeatable.
    assert any(r["status"] == "ok" and r["attempts"] > 1 for r in posts)
    assert any(r["error"] and r["error"]["kind"] == "transport" for r in posts)
    assert any(r["error"] and r["error"]["kind"] == "twilio" for r in posts)
    assert any(r["status"] == "ok" and r["attempts"] > 1 for r in gets)


async def test_timeouts_repeat_a_get_but_never_a_post(
    tansu: Any, mock: Any, tmp_path: Path
) -> None:
    base_url = mock("--latency-ms", "400")
    replies, stats = await _run(
        tansu, base_url, tmp_path, 20, BRIDGE_TWILIO__RESPONSE_TIMEOUT_S="0.1"
    )
    for request_id, reply in replies.items():
        assert reply["error"]["kind"] == "timeout", reply
        expected = 1 if request_id.startswith("post-") else 4
        assert reply["attempts"] == stats["by_request_id"][request_id] == expected, reply
