"""The project's own checks (ruff, mypy --strict) run as tests, so one command runs them all."""

import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "bridge", "tests"],
        ["ruff", "format", "--check", "bridge", "tests"],
        ["mypy", "bridge", "tests"],
    ],
    ids=["ruff", "ruff-format", "mypy"],
)
def test_tool_passes(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
