"""Fixtures for every kind of test: tools the suite installs itself when the machine lacks them."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

PROMTOOL_HINT = (
    "promtool is missing: install Debian's 'prometheus' package "
    "(apt-get install --no-install-recommends prometheus) or put promtool on PATH"
)


@pytest.fixture(scope="session")
def promtool() -> str:
    """The path of ``promtool``, installed from Debian's ``prometheus`` package where missing.

    Never a skip: a check that did not run must not look like one that passed.
    """
    found = shutil.which("promtool")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
        ):
            subprocess.run(command, capture_output=True, check=False, timeout=600)
        found = shutil.which("promtool")
    if found is None:
        pytest.fail(PROMTOOL_HINT)
    return found
