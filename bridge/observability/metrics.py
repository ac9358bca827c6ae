"""Prometheus metrics of the bridge, defined once; labels never carry a SID, number or URL.

Label values come from small closed sets (outcomes, error kinds, status classes, families,
configured topics) or from the catalog (api, operationId), so cardinality stays bounded
whatever the traffic.
"""

from __future__ import annotations

import asyncio
import platform
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics import MetricWrapperBase

from bridge import __version__

__all__ = [
    "ADMIN_REQUESTS",
    "INSTANCES",
    "INSTANCE_CHANGES",
    "BROKER_REACHABLE",
    "BUILD",
    "CONSUMER_LAG",
    "CONTENT_TYPE",
    "DELIVERIES",
    "DELIVERIES_TRACKED",
    "ERRORS",
    "EVENT_LOOP_TASKS",
    "EVENTS_PUBLISHED",
    "IDEMPOTENCY_LOAD_SECONDS",
    "IN_FLIGHT",
    "POLLER_ITEMS",
    "POLLER_RUNS",
    "RATE_LIMIT_WAITS",
    "RATE_LIMIT_WAIT_SECONDS",
    "REGISTRY",
    "REPLY_PUBLISH_SECONDS",
    "REQUESTS",
    "RETRIES",
    "TWILIO_REQUESTS",
    "TWILIO_REQUEST_SECONDS",
    "TWIML_ANSWERS",
    "TWIML_ANSWER_SECONDS",
    "TWIML_DROPPED",
    "TWIML_WAITING",
    "WEBHOOKS",
    "WEBHOOK_SIGNATURE_FAILURES",
    "exposition",
    "labelled",
    "status_class",
]

# ``*_created`` series double the exposition and no dashboard or alert here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry()
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Twilio answers in 50 ms to a few seconds; Kafka acknowledges in about a millisecond.
_TWILIO_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_KAFKA_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

_Metric = TypeVar("_Metric", bound=MetricWrapperBase)
_children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}


def labelled(metric: _Metric, *values: str) -> _Metric:
    """``metric.labels(*values)``, remembered: ``labels`` checks and locks on every call
    (~1.7 µs), and each request asks three times. Not for a metric whose series are removed."""
    key = (id(metric), values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child  # type: ignore[return-value]


BUILD = Info(
    "twilio_bridge_build", "Version of the bridge and of Python it runs on.", registry=REGISTRY
)
BUILD.info({"version": __version__, "python": platform.python_version()})

REQUESTS = Counter(
    "twilio_bridge_requests",
    "Request envelopes consumed, by topic and outcome (ok, error, rejected).",
    ["topic", "outcome"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "twilio_bridge_errors",
    "Failed requests by error kind (validation, auth, rate_limited, timeout, ...).",
    ["kind"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "twilio_bridge_requests_in_flight",
    "Request envelopes fetched and not yet finished (replied and acknowledged).",
    registry=REGISTRY,
)
TWILIO_IN_FLIGHT = Gauge(
    "twilio_bridge_twilio_requests_in_flight",
    "HTTP requests sent to Twilio and not yet answered; the rest of "
    "twilio_bridge_requests_in_flight waits for its key, a rate limit or Kafka.",
    registry=REGISTRY,
)
TWILIO_REQUESTS = Counter(
    "twilio_bridge_twilio_requests",
    "HTTP requests sent to Twilio (every attempt and page), by api, operation, method and "
    "status class (2xx, 4xx, 5xx, or none when no answer came).",
    ["api", "operation", "method", "status_class"],
    registry=REGISTRY,
)
TWILIO_REQUEST_SECONDS = Histogram(
    "twilio_bridge_twilio_request_duration_seconds",
    "Time from sending a request to Twilio to its full answer.",
    ["api", "method"],
    buckets=_TWILIO_BUCKETS,
    registry=REGISTRY,
)
RETRIES = Counter(
    "twilio_bridge_retries",
    "Twilio attempts retried, by reason (rate_limited, http_5xx, timeout, transport, ...).",
    ["reason"],
    registry=REGISTRY,
)
RATE_LIMIT_WAITS = Counter(
    "twilio_bridge_rate_limit_waits",
    "Attempts that waited for the rate limit or the concurrency cap.",
    registry=REGISTRY,
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "twilio_bridge_rate_limit_wait_seconds",
    "Total time attempts waited for the rate limit or the concurrency cap.",
    registry=REGISTRY,
)
REPLY_PUBLISH_SECONDS = Histogram(
    "twilio_bridge_reply_publish_duration_seconds",
    "Time from publishing a reply to the broker's acknowledgement.",
    buckets=_KAFKA_BUCKETS,
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "twilio_bridge_consumer_lag",
    "Records in a request partition after the group's committed offset (end minus committed).",
    ["topic", "partition"],
    registry=REGISTRY,
)
IDEMPOTENCY_LOAD_SECONDS = Gauge(
    "twilio_bridge_idempotency_load_seconds",
    "How long this replica last took to read the outbound dedupe state it needs: at start-up "
    "every partition's starts and its own partitions' answers, at a rebalance those of the "
    "partitions it gained.",
    registry=REGISTRY,
)
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
EVENTS_PUBLISHED = Counter(
    "twilio_bridge_events_published",
    "CloudEvents acknowledged by Kafka, by topic (from webhooks and the poller).",
    ["topic"],
    registry=REGISTRY,
)
TWIML_ANSWERS = Counter(
    "twilio_bridge_twiml_answers",
    "Webhooks answered with TwiML from Kafka (BRIDGE_TWIML__FAMILIES), Twilio's retries "
    "included, by family and outcome: answered (the service's TwiML), timeout or invalid "
    "(the fallback).",
    ["family", "outcome"],
    registry=REGISTRY,
)
TWIML_ANSWER_SECONDS = Histogram(
    "twilio_bridge_twiml_answer_duration_seconds",
    "From Kafka's acknowledgement of an awaited event to its answer read by this replica.",
    ["family"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
TWIML_DROPPED = Counter(
    "twilio_bridge_twiml_dropped",
    "TwiML answers read and never sent, by reason: late (after this replica answered the "
    "fallback), repeated (a second answer for an id this replica answered), unknown (an id no "
    "replica published within BRIDGE_WEBHOOK__DEDUPE_WINDOW_S: every replica counts it).",
    ["reason"],
    registry=REGISTRY,
)
TWIML_WAITING = Gauge(
    "twilio_bridge_twiml_waiting",
    "Event ids this replica holds webhooks for, waiting for their TwiML answer.",
    registry=REGISTRY,
)
POLLER_RUNS = Counter(
    "twilio_bridge_poller_runs",
    "Polls of a credential, by outcome (ok, twilio_failed, kafka_timeout).",
    ["outcome"],
    registry=REGISTRY,
)
POLLER_ITEMS = Counter(
    "twilio_bridge_poller_items",
    "Resources listed by the poller, by resource (messages, calls).",
    ["resource"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "twilio_bridge_deliveries",
    "Statuses of tracked sends learnt, by source (callback, reconcile) and outcome "
    "(published, duplicate, backwards, after_final, ...).",
    ["source", "outcome"],
    registry=REGISTRY,
)
DELIVERIES_TRACKED = Gauge(
    "twilio_bridge_deliveries_tracked",
    "Tracked sends not yet final in the state partitions this replica owns.",
    registry=REGISTRY,
)

INSTANCES = Gauge(
    "twilio_bridge_instances",
    "Instances this replica has read from the instances topic and can use.",
    registry=REGISTRY,
)
INSTANCE_CHANGES = Counter(
    "twilio_bridge_instance_changes",
    "Instance changes made through this replica's admin API, by action.",
    ["action"],
    registry=REGISTRY,
)
ADMIN_REQUESTS = Counter(
    "twilio_bridge_admin_requests",
    "Instances API requests, by method and status code.",
    ["method", "status"],
    registry=REGISTRY,
)

BROKER_REACHABLE = Gauge(
    "twilio_bridge_broker_reachable",
    "1 while this replica's Kafka producer reaches a broker, 0 while it cannot (readiness "
    "follows it within about a second).",
    registry=REGISTRY,
)
EVENT_LOOP_TASKS = Gauge(
    "twilio_bridge_event_loop_tasks",
    "asyncio tasks alive in the bridge's event loop: follows the work in flight, and keeps "
    "growing only when tasks leak.",
    registry=REGISTRY,
)


def _loop_tasks() -> int:
    # /metrics is served inside the bridge's loop; anywhere else there is no loop to count.
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:
        return 0


EVENT_LOOP_TASKS.set_function(_loop_tasks)


def status_class(status: int | None) -> str:
    """``2xx`` for 204, ``none`` when no answer came: a label with five values at most."""
    return f"{status // 100}xx" if status is not None else "none"


def exposition() -> bytes:
    """Every metric in the Prometheus text format."""
    return generate_latest(REGISTRY)
