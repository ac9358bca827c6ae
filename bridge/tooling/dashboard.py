"""The bridge's Grafana dashboard, generated from code with Grafana's grafana-foundation-sdk.

    python -m bridge.tooling.dashboard [OUT]

writes it (default: the file the Helm chart ships, ``DASHBOARD_FILE``); a test fails when the
committed file drifts from this code. Every query reads the bridge's own metrics
(``bridge.observability.metrics``), filtered by the ``namespace`` and ``pod`` variables, or the
standard Kubernetes series of kube-state-metrics (``kube_pod_*``) and the kubelet's cAdvisor
(``container_*``): the bridge exposes no ``process_*`` series of its own.

The SDK is a development dependency, imported only while a dashboard is built: the module
itself loads in the runtime image, which has every module of the package but not the SDK.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from grafana_foundation_sdk.cog.builder import Builder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef, Panel, VariableModel

__all__ = ["DASHBOARD_FILE", "UID", "dashboard_json", "main", "render_dashboard"]

# Where the chart's ConfigMap template reads it (relative to the repository's root).
DASHBOARD_FILE = Path("helm/twilio-kafka-bridge/dashboards/twilio-kafka-bridge.json")
UID = "twilio-kafka-bridge"
# The container of the chart's Deployment, for the kubelet's per-container series.
CONTAINER = "bridge"

_PODS = 'namespace=~"$namespace", pod=~"$pod"'
_NOT_OK = 'outcome!="ok"'
_UNAVAILABLE = 'outcome="unavailable"'
_RATE = "[$__rate_interval]"
# The bridge container's series of the kubelet (cAdvisor) and kube-state-metrics.
_CONTAINER = f'{_PODS}, container="{CONTAINER}"'


def _m(name: str, matchers: str = "") -> str:
    """``name`` with the dashboard's namespace and pod selection (and ``matchers``)."""
    extra = f", {matchers}" if matchers else ""
    return f"{name}{{{_PODS}{extra}}}"


def _total(gauge: str) -> str:
    return f"sum({_m(gauge)})"


def _rate(name: str, by: str = "", matchers: str = "") -> str:
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}(rate({_m(name, matchers)}{_RATE}))"


def _quantiles(histogram: str) -> list[tuple[str, str]]:
    """p50, p95 and p99 of a histogram over every selected pod."""
    return [
        (
            f"histogram_quantile({q}, sum by (le) (rate({_m(f'{histogram}_bucket')}{_RATE})))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


@dataclass(frozen=True)
class Graph:
    """One panel: its queries as (PromQL, legend) pairs."""

    title: str
    description: str
    queries: list[tuple[str, str]]
    unit: str = "short"
    width: int = 8
    kind: Literal["timeseries", "stat"] = "timeseries"


def _per_second(
    title: str, description: str, counter: str, by: str, matchers: str = "", width: int = 6
) -> Graph:
    """A panel of one counter's rate, a series for each value of the ``by`` labels."""
    legend = " ".join("{{" + label.strip() + "}}" for label in by.split(","))
    return Graph(title, description, [(_rate(counter, by, matchers), legend)], "reqps", width)


def _rows() -> list[tuple[str, list[Graph]]]:
    """Every row and panel of the dashboard (a declarative document: long by nature)."""
    return [
        (
            "Traffic",
            [
                _per_second(
                    "Requests finished, by outcome",
                    "Request envelopes finished per second: ok, error (a reply with an error), "
                    "rejected (not an envelope, no reply possible).",
                    "twilio_bridge_requests_total",
                    "outcome",
                    width=8,
                ),
                _per_second(
                    "Twilio calls, by operation and status",
                    "Every HTTP request to Twilio (attempts, pages, polls) by operationId and "
                    "status class; none: no answer came.",
                    "twilio_bridge_twilio_requests_total",
                    "operation, status_class",
                    width=8,
                ),
                Graph(
                    "Replies published",
                    "Replies acknowledged by Kafka per second.",
                    [(_rate("twilio_bridge_reply_publish_duration_seconds_count"), "replies")],
                    "reqps",
                ),
                _per_second(
                    "Errors, by kind",
                    "Failed requests per second by error kind; each is also on the error topic.",
                    "twilio_bridge_errors_total",
                    "kind",
                    width=12,
                ),
                Graph(
                    "Error ratio (5 min)",
                    "Share of finished requests that were not ok, over the last 5 minutes.",
                    [
                        (
                            f"sum(rate({_m('twilio_bridge_requests_total', _NOT_OK)}[5m]))"
                            f" / sum(rate({_m('twilio_bridge_requests_total')}[5m]))",
                            "error ratio",
                        )
                    ],
                    "percentunit",
                    width=6,
                    kind="stat",
                ),
                Graph(
                    "Requests in flight",
                    "Envelopes fetched and not yet finished, over every selected pod.",
                    [(f"sum({_m('twilio_bridge_requests_in_flight')})", "in flight")],
                    width=6,
                    kind="stat",
                ),
            ],
        ),
        (
            "Twilio",
            [
                Graph(
                    "Twilio answer time",
                    "Time from sending a request to Twilio to its full answer.",
                    _quantiles("twilio_bridge_twilio_request_duration_seconds"),
                    "s",
                    width=6,
                ),
                Graph(
                    "Calls in flight against the cap",
                    "Calls at Twilio now, over every selected pod, against 90 % of the "
                    "account's concurrency limit ($account_concurrency: "
                    "BRIDGE_RATE_LIMIT__ACCOUNT_CONCURRENCY), where the bridge stops. Records "
                    "held well above the calls means requests wait for their key, a rate limit "
                    "or Kafka.",
                    [
                        (
                            f"sum({_m('twilio_bridge_twilio_requests_in_flight')})",
                            "calls at Twilio",
                        ),
                        (f"sum({_m('twilio_bridge_requests_in_flight')})", "records held"),
                        ("vector(0.9 * $account_concurrency)", "cap (90 % of the account)"),
                    ],
                    width=6,
                ),
                Graph(
                    "429s and retries",
                    "Attempts retried by reason (rate_limited is Twilio's 429), and requests "
                    "that got a 429 on their last attempt.",
                    [
                        (_rate("twilio_bridge_retries_total", "reason"), "retried: {{reason}}"),
                        (
                            _rate("twilio_bridge_errors_total", matchers='kind="rate_limited"'),
                            "429, given up",
                        ),
                    ],
                    "reqps",
                    width=6,
                ),
                Graph(
                    "Rate-limit waits",
                    "Attempts that waited for the pace or the concurrency cap per second, and "
                    "how many were waiting on average (seconds waited per second).",
                    [
                        (_rate("twilio_bridge_rate_limit_waits_total"), "waits/s"),
                        (_rate("twilio_bridge_rate_limit_wait_seconds_total"), "waiting"),
                    ],
                    width=6,
                ),
            ],
        ),
        (
            "Kafka",
            [
                Graph(
                    "Consumer lag, by partition",
                    "Records in each request partition after the group's committed offset, as "
                    "reported by the replica that owns it.",
                    [
                        (
                            f"max by (topic, partition) ({_m('twilio_bridge_consumer_lag')})",
                            "{{topic}}/{{partition}}",
                        )
                    ],
                    width=6,
                ),
                Graph(
                    "Reply publish latency",
                    "Time from publishing a reply to the broker's acknowledgement.",
                    _quantiles("twilio_bridge_reply_publish_duration_seconds"),
                    "s",
                    width=6,
                ),
                Graph(
                    "Broker reachable",
                    "1 while the pod's producer reaches a Kafka broker, 0 while it cannot "
                    "(followed twice a second; readiness is false meanwhile, and at start-up "
                    "until a broker answers).",
                    [(f"max by (pod) ({_m('twilio_bridge_broker_reachable')})", "{{pod}}")],
                    width=6,
                ),
                _per_second(
                    "Events published, by topic",
                    "CloudEvents acknowledged by Kafka per second, from webhooks and the poller.",
                    "twilio_bridge_events_published_total",
                    "topic",
                ),
            ],
        ),
        (
            "Inbound",
            [
                _per_second(
                    "Webhooks, by family and outcome",
                    "Webhook deliveries per second: published (duplicates too), forbidden, "
                    "malformed, unavailable (503), ...",
                    "twilio_bridge_webhooks_total",
                    "family, outcome",
                ),
                _per_second(
                    "Signature failures",
                    "Webhooks refused for a missing or invalid Twilio signature, by family.",
                    "twilio_bridge_webhook_signature_failures_total",
                    "family",
                ),
                _per_second(
                    "Webhooks answered 503",
                    "Kafka did not acknowledge within BRIDGE_WEBHOOK__ACK_TIMEOUT_S; Twilio "
                    "retries them.",
                    "twilio_bridge_webhooks_total",
                    "family",
                    _UNAVAILABLE,
                ),
                _per_second(
                    "Poller runs, by outcome",
                    "Polls of a credential per second (accounts that cannot receive webhooks).",
                    "twilio_bridge_poller_runs_total",
                    "outcome",
                ),
            ],
        ),
        (
            "Process",
            [
                Graph(
                    "CPU",
                    "CPU used by the bridge container, by pod (cAdvisor); 100 % is one core.",
                    [
                        (
                            "sum by (pod) (rate(container_cpu_usage_seconds_total"
                            f"{{{_CONTAINER}}}{_RATE}))",
                            "{{pod}}",
                        )
                    ],
                    "percentunit",
                    width=6,
                ),
                Graph(
                    "Resident memory",
                    "RSS of the bridge container, by pod (cAdvisor).",
                    [
                        (
                            f"sum by (pod) (container_memory_rss{{{_CONTAINER}}})",
                            "{{pod}}",
                        )
                    ],
                    "bytes",
                    width=6,
                ),
                Graph(
                    "Restarts (1 h)",
                    "Container restarts in the last hour, by pod (kube-state-metrics).",
                    [
                        (
                            "sum by (pod) (increase(kube_pod_container_status_restarts_total"
                            f"{{{_CONTAINER}}}[1h]))",
                            "{{pod}}",
                        )
                    ],
                    width=6,
                ),
                Graph(
                    "Versions running",
                    "Pods by bridge version.",
                    [(f"count by (version) ({_m('twilio_bridge_build_info')})", "{{version}}")],
                    width=6,
                    kind="stat",
                ),
            ],
        ),
    ]


def _datasource() -> DataSourceRef:
    """The data source the ``datasource`` variable names."""
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    return DataSourceRef(type_val="prometheus", uid="${datasource}")


def _panel(graph: Graph, panel_id: int) -> Builder[Panel]:
    from grafana_foundation_sdk.builders import prometheus, stat, timeseries

    panel = timeseries.Panel() if graph.kind == "timeseries" else stat.Panel()
    panel.id(panel_id).title(graph.title).description(graph.description)
    panel.datasource(_datasource()).unit(graph.unit).span(graph.width).height(8)
    for ref, (expr, legend) in zip("ABCDEFGH", graph.queries, strict=False):
        query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)
        panel.with_target(query.datasource(_datasource()))
    return panel


def _variables() -> list[Builder[VariableModel]]:
    """datasource, namespace and pod (every pod exposing the bridge's metrics), and the
    account's concurrency limit the cap panel draws."""
    from grafana_foundation_sdk.builders import dashboard
    from grafana_foundation_sdk.models.dashboard import (
        VariableOption,
        VariableRefresh,
        VariableSort,
    )

    every = VariableOption(selected=True, text="All", value="$__all")
    selections: list[Builder[VariableModel]] = []
    for name, query in (
        ("namespace", "label_values(twilio_bridge_build_info, namespace)"),
        ("pod", 'label_values(twilio_bridge_build_info{namespace=~"$namespace"}, pod)'),
    ):
        selections.append(
            dashboard.QueryVariable(name)
            .label(name.capitalize())
            .datasource(_datasource())
            .query(query)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(every)
        )
    limit = VariableOption(selected=True, text="100", value="100")
    return [
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        *selections,
        dashboard.TextBoxVariable("account_concurrency")
        .label("Account concurrency")
        .description("BRIDGE_RATE_LIMIT__ACCOUNT_CONCURRENCY: the account's limit at Twilio")
        .default_value("100")
        .current(limit),
    ]


def dashboard_json() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    from grafana_foundation_sdk.builders import dashboard
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DashboardCursorSync

    board = (
        dashboard.Dashboard("Twilio Kafka bridge")
        .uid(UID)
        .description(
            "Traffic, Twilio, Kafka, inbound webhooks and the process of twilio-kafka-bridge."
        )
        .tags(["twilio", "kafka", "twilio-kafka-bridge"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .editable()
    )
    for variable in _variables():
        board.with_variable(variable)
    panel_id = 0
    for title, graphs in _rows():
        panel_id += 1
        board.with_row(dashboard.Row(title).id(panel_id))
        for graph in graphs:
            panel_id += 1
            board.with_panel(_panel(graph, panel_id))
    document: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return document


def render_dashboard() -> str:
    """The dashboard exactly as committed in the chart."""
    return json.dumps(dashboard_json(), indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bridge.tooling.dashboard [OUT]``: write the dashboard."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or args[:1] in (["-h"], ["--help"]):
        print(__doc__.splitlines()[2] if __doc__ else "", file=sys.stderr)
        return 2
    out = Path(args[0]) if args else DASHBOARD_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_dashboard(), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
