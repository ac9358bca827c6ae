"""The chart's alert rules (helm/twilio-kafka-bridge/rules/alerts.yaml) and dashboard queries,
checked by Prometheus's own promtool: the rules parse, each alert fires on a series that should
fire it and stays quiet on one that should not (tests/ops/alerts_test.yaml), every alert says
what it is and links to its runbook in the README, and every dashboard query parses.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from bridge.tooling.dashboard import DASHBOARD_FILE
from tests.helpers import CHART, README, ROOT

RULES_FILE = CHART / "rules" / "alerts.yaml"
RULE_TESTS = Path(__file__).with_name("alerts_test.yaml")
RUNBOOK_BASE = "https://github.com/twilio-kafka-bridge/twilio-kafka-bridge/blob/main/README.md"
# What Grafana puts in place of the dashboard's variables before Prometheus sees a query.
DASHBOARD_VARIABLES = {
    "$__rate_interval": "2m",
    "$namespace": ".*",
    "$pod": ".*",
    "$account_concurrency": "100",
}


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def promtool_run(promtool: str, *args: str) -> str:
    result = subprocess.run(
        [promtool, *args], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces to '-'."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_promtool_checks_the_rules(promtool: str) -> None:
    out = promtool_run(promtool, "check", "rules", str(RULES_FILE))
    assert f"SUCCESS: {len(alerts())} rules found" in out


def test_promtool_unit_tests_pass(promtool: str) -> None:
    out = promtool_run(promtool, "test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in out


def test_every_alert_is_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {alert["alert"] for alert in alerts()}
    assert len(names) == len(alerts())
    assert names - firing == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_every_alert_says_what_and_links_its_runbook() -> None:
    anchors = github_anchors(README.read_text())
    for alert in alerts():
        name, annotations = alert["alert"], alert["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        runbook = annotations["runbook_url"]
        assert runbook.startswith(RUNBOOK_BASE + "#"), name
        assert runbook.removeprefix(RUNBOOK_BASE + "#") in anchors, f"{name}: no README section"


def test_the_runbook_base_is_the_charts_default() -> None:
    # The template rebases the links by replacing this exact text: the three must agree.
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert RUNBOOK_BASE in helpers
    assert values["prometheusRule"]["runbookBaseUrl"] == RUNBOOK_BASE


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    dashboard = json.loads((ROOT / DASHBOARD_FILE).read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(queries) > 20
    for name, value in DASHBOARD_VARIABLES.items():
        queries = [q.replace(name, value) for q in queries]
    assert not [q for q in queries if "$" in q], "a variable this test does not know"
    rules = [{"record": f"dashboard:query_{n}", "expr": q} for n, q in enumerate(queries)]
    rule_file = tmp_path / "dashboard.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = promtool_run(promtool, "check", "rules", str(rule_file))
    assert f"SUCCESS: {len(queries)} rules found" in out
