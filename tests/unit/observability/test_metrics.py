"""The metric definitions: names, units and labels per Prometheus rules."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.observability import metrics
from bridge.observability.metrics import REGISTRY, exposition, labelled, status_class

# Labels whose values are unbounded (SIDs, numbers, ids, URLs) must never exist.
FORBIDDEN_LABELS = {"sid", "account_sid", "to", "from", "phone", "id", "request_id", "url", "path"}


def _families() -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(exposition().decode())}


def test_every_name_has_the_prefix_and_its_unit() -> None:
    families = _families()
    assert len(families) >= 16
    for name, kind in families.items():
        assert name.startswith("twilio_bridge_"), name
        if "duration" in name or "wait_seconds" in name:
            assert name.endswith("_seconds"), name
        assert kind in {"counter", "gauge", "histogram", "info"}, (name, kind)


def test_no_label_can_carry_an_identifier() -> None:
    for collector in REGISTRY._collector_to_names:
        names = set(getattr(collector, "_labelnames", ()))
        assert not names & FORBIDDEN_LABELS, (collector, names)


def test_build_info_names_the_version() -> None:
    from bridge import __version__

    text = exposition().decode()
    assert 'twilio_bridge_build_info{python="' in text and f'version="{__version__}"' in text


@pytest.mark.parametrize(
    ("status", "label"), [(200, "2xx"), (204, "2xx"), (429, "4xx"), (503, "5xx"), (None, "none")]
)
def test_status_class_has_five_values_at_most(status: int | None, label: str) -> None:
    assert status_class(status) == label


def test_a_remembered_child_counts_in_the_series_it_names() -> None:
    topic = "labelled.test"
    child = labelled(metrics.REQUESTS, topic, "ok")
    assert labelled(metrics.REQUESTS, topic, "ok") is child
    assert labelled(metrics.REQUESTS, topic, "error") is not child
    child.inc(2)
    sample = {"topic": topic, "outcome": "ok"}
    assert REGISTRY.get_sample_value("twilio_bridge_requests_total", sample) == 2


def test_promtool_accepts_the_exposition(promtool: str) -> None:
    metrics.REQUESTS.labels("twilio.requests", "ok").inc(0)
    metrics.TWILIO_REQUEST_SECONDS.labels("api.v2010", "POST")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition(), capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
