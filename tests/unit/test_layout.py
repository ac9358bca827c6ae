"""The layout's import rules (pyproject's import-linter contracts) hold: imports only point down,
and only the Kafka adapter (and tooling) imports aiokafka."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


def test_the_import_rules_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "source", "reported"),
    [
        (
            "contract/upward.py",
            "from bridge.app import service\n",
            "bridge.contract.upward -> bridge.app.service",
        ),
        (
            "inbound/leak.py",
            "from aiokafka.errors import KafkaError\n",
            "bridge.inbound.leak -> aiokafka",
        ),
    ],
    ids=["upward import", "aiokafka outside the Kafka adapter"],
)
def test_the_contracts_catch_a_wrong_import(
    tmp_path: Path, module: str, source: str, reported: str
) -> None:
    """The check is not vacuous: a module importing what its contract forbids fails it."""
    tree = tmp_path / "pkg" / "bridge"
    tree.parent.mkdir()
    subprocess.run(["cp", "-r", str(ROOT / "bridge"), str(tree)], check=True)
    (tree / module).write_text(source)
    config = tmp_path / "pyproject.toml"
    config.write_text((ROOT / "pyproject.toml").read_text())
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(tmp_path / "pkg"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert reported in result.stdout
    assert "1 kept, 1 broken" in result.stdout
