from __future__ import annotations

from dataclasses import replace

from bridge.tracking.send import TrackedSend
from tests.helpers import ACCOUNT

SEND = TrackedSend("tok", "req-1", b"key", {"m": 1}, "message", ACCOUNT, "default", 0.0)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_trace_context_survives_the_state_topic_and_goes_on_the_records() -> None:
    traced = replace(SEND, trace=(("traceparent", TRACEPARENT), ("tracestate", "k=v")))
    back = TrackedSend.from_json(traced.to_json())
    assert back == traced
    assert back.record_headers() == [
        ("id", b"req-1"),
        ("traceparent", TRACEPARENT.encode()),
        ("tracestate", b"k=v"),
    ]


def test_a_send_without_trace_context_has_only_its_id_and_reads_records_written_without_one() -> (
    None
):
    assert b"trace" not in SEND.to_json()
    assert TrackedSend.from_json(SEND.to_json()) == SEND
    assert SEND.record_headers() == [("id", b"req-1")]
