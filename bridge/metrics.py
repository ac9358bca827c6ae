"""Prometheus metrics of the bridge, defined once; labels never carry a SID, number or URL."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "REGISTRY", "WEBHOOKS", "WEBHOOK_SIGNATURE_FAILURES", "exposition"]

REGISTRY = CollectorRegistry()
CONTENT_TYPE = CONTENT_TYPE_LATEST

WEBHOOKS = Counter(
    "twilio_bridge_webhooks",
    "Webhook deliveries by family and outcome (published, forbidden, malformed, ...).",
    ["family", "outcome"],
    registry=REGISTRY,
)
WEBHOOK_SIGNATURE_FAILURES = Counter(
    "twilio_bridge_webhook_signature_failures",
    "Webhooks refused for a missing or invalid Twilio signature.",
    ["family"],
    registry=REGISTRY,
)


def exposition() -> bytes:
    """Every metric in the Prometheus text format."""
    return generate_latest(REGISTRY)
