"""Every metric the chart's dashboard and alerts name exists: the bridge's own in the /metrics
of a real bridge process, the others in the README's list of standard Kubernetes series.

The PromQL comes from the chart rendered with both toggles on, as a cluster would get it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import yaml

from bridge.tooling.local.tansu import TansuBroker
from tests.helpers import CHART, README
from tests.support.harness import BridgeProcess, Topics

MONITORING_ON = {"grafanaDashboard": {"enabled": True}, "prometheusRule": {"enabled": True}}
# Series from outside the bridge may only come from kube-state-metrics or the kubelet.
STANDARD_PREFIXES = ("kube_pod_", "container_", "process_")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_NOT_METRICS = {
    "and", "or", "unless", "bool", "offset", "inf", "nan",
    "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values",
}  # fmt: skip


def rendered_queries() -> list[str]:
    """Every PromQL expression of the rendered dashboard (panels and variables) and rules."""
    with helm.Chart.load(CHART) as chart:
        out = chart.render(MONITORING_ON, name="bridge", namespace="messaging", is_install=True)
    docs = [
        d
        for path, text in out.items()
        if path.endswith(".yaml")
        for d in yaml.safe_load_all(text)
        if d
    ]
    queries: list[str] = []
    for doc in docs:
        if doc["kind"] == "PrometheusRule":
            queries += [r["expr"] for g in doc["spec"]["groups"] for r in g["rules"]]
        elif doc["kind"] == "ConfigMap" and "twilio-kafka-bridge.json" in doc["data"]:
            board: dict[str, Any] = json.loads(doc["data"]["twilio-kafka-bridge.json"])
            queries += [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
            queries += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return queries


def metric_names(promql: str) -> set[str]:
    """The metric names an expression reads: what is left once strings, label matchers,
    ranges, grouping clauses, variables, function calls and keywords are set aside."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", promql)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    # label_values(metric, label): the second argument is a label.
    names = [n for n in names if not re.search(rf",\s*{n}\s*\)", text)]
    return {n for n in names if n.lower() not in _NOT_METRICS}


def exposed_names(exposition: str) -> set[str]:
    """Series names in a Prometheus text exposition, from its TYPE lines (a labelled metric
    with no series yet has one too); a histogram's as its _bucket, _sum and _count."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE):
        if kind == "histogram":
            names |= {name + suffix for suffix in HISTOGRAM_SUFFIXES}
        else:
            names.add(name)
    return names


def test_metric_names_reads_promql() -> None:
    expr = (
        'sum by (namespace, job) (rate(a_total{outcome!="ok", x=~"$pod"}[5m])) / on (job) '
        "histogram_quantile(0.9, sum by (le) (rate(b_bucket[$__rate_interval]))) > 1e3 "
        "and max_over_time(c[1h:1m]) unless d offset 5m or vector(0.9 * 100)"
    )
    assert metric_names(expr) == {"a_total", "b_bucket", "c", "d"}
    assert metric_names('label_values(e{namespace=~"$namespace"}, pod)') == {"e"}


async def test_every_metric_named_exists(tansu: TansuBroker, tmp_path: Path) -> None:
    named = set().union(*(metric_names(q) for q in rendered_queries()))
    own = {n for n in named if n.startswith("twilio_bridge_")}
    # Not vacuous: the extraction found the bridge's metrics across every row.
    assert len(own) >= 15, own
    assert {
        "twilio_bridge_consumer_lag",
        "twilio_bridge_twilio_request_duration_seconds_bucket",
    } <= own

    topics = Topics.fresh()
    await topics.create(tansu.bootstrap_servers)
    # Twilio is never called: nothing is produced to the request topic.
    bridge = BridgeProcess(
        tansu.bootstrap_servers, "http://127.0.0.1:9", topics, tmp_path / "bridge.log"
    ).start()
    try:
        await bridge.wait_ready()
        async with httpx.AsyncClient() as client:
            exposition = (await client.get(f"{bridge.http_url}/metrics")).text
    finally:
        assert bridge.stop() == 0
    assert own - exposed_names(exposition) == set(), "named in the chart, not exposed"

    others = named - own
    assert others, "the process and broker rows read kube-state-metrics and cAdvisor"
    readme = README.read_text()
    for name in sorted(others):
        assert name.startswith(STANDARD_PREFIXES), name
        assert f"`{name}`" in readme, f"{name} is not among the README's standard series"
