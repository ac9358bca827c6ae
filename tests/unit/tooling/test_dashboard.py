"""The Grafana dashboard: the committed file is what the code generates, and its shape holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridge.tooling.dashboard import DASHBOARD_FILE, UID, dashboard_json, main, render_dashboard
from tests.helpers import ROOT


def panels() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = dashboard_json()["panels"]
    return found


def test_the_committed_dashboard_is_the_generated_one() -> None:
    committed = (ROOT / DASHBOARD_FILE).read_text()
    assert committed == render_dashboard(), "run `python -m bridge.tooling.dashboard`"


def test_main_writes_the_dashboard(tmp_path: Path) -> None:
    out = tmp_path / "board.json"
    assert main([str(out)]) == 0
    assert out.read_text() == render_dashboard()
    assert main(["a", "b"]) == 2


def test_template_variables_are_datasource_namespace_and_pod() -> None:
    variables = {v["name"]: v for v in dashboard_json()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "pod"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert variables[name]["includeAll"] is True
        assert variables[name]["allValue"] == ".*"
    # The pod list follows the namespace choice.
    assert "$namespace" in variables["pod"]["query"]


def test_rows_are_the_operators_questions() -> None:
    rows = [p["title"] for p in panels() if p["type"] == "row"]
    assert rows == ["Traffic", "Twilio", "Kafka", "Inbound", "Process"]


def test_every_panel_queries_the_chosen_datasource_namespace_and_pods() -> None:
    graphs = [p for p in panels() if p["type"] != "row"]
    assert len({p["id"] for p in panels()}) == len(panels())
    for panel in graphs:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for target in panel["targets"]:
            expr = target["expr"]
            if "vector(" in expr:  # a constant line, the cap
                continue
            assert 'namespace=~"$namespace", pod=~"$pod"' in expr, (panel["title"], expr)


def test_rows_fill_the_grid_width() -> None:
    width_by_row: dict[int, int] = {}
    row = 0
    for panel in panels():
        if panel["type"] == "row":
            row = panel["id"]
            continue
        width_by_row[row] = width_by_row.get(row, 0) + panel["gridPos"]["w"]
    assert width_by_row and all(total % 24 == 0 for total in width_by_row.values())


def test_the_uid_is_stable() -> None:
    # Grafana links and the sidecar's updates go by uid.
    assert json.loads(render_dashboard())["uid"] == UID == "twilio-kafka-bridge"
