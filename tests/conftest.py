"""Fixtures and hooks for every kind of test: tools the suite installs itself when the machine
lacks them, one node id per test, and figures the tests show in the run's summary."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Callable

import pytest
from _pytest.nodeid import NodeId

# The record_property name of what a test shows in the run's summary (see ``show``).
SHOWN = "shown"

PROMTOOL_HINT = (
    "promtool is missing: install Debian's 'prometheus' package "
    "(apt-get install --no-install-recommends prometheus) or put promtool on PATH"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each test its own node id, and refuse a collection in which two share one.

    pytest 9 builds a test's node id from its original name and parametrization, and
    schemathesis puts each API operation in the name only (``test[GET /healthz]``), so all the
    tests of one schema share one id. pytest-xdist's ``--dist loadfile`` keys tests by id: of
    five tests with one id it would run one, and say nothing.
    """
    by_id: defaultdict[str, list[pytest.Item]] = defaultdict(list)
    for item in items:
        by_id[item.nodeid].append(item)
    for shared in (group for group in by_id.values() if len(group) > 1):
        for item in shared:
            if item.parent is not None:
                item._id = NodeId.parse(f"{item.parent.nodeid}::{item.name}")
    ids = [item.nodeid for item in items]
    if len(set(ids)) != len(ids):
        raise pytest.UsageError(
            f"tests share a node id: {sorted({i for i in ids if ids.count(i) > 1})}"
        )


@pytest.fixture
def show(record_property: Callable[[str, object], None]) -> Callable[[str], None]:
    """``show(text)``: print ``text`` in the run's summary, pass or fail; a test's own output
    is not printed, and under pytest-xdist not even with ``capsys.disabled()``."""

    def show(text: str) -> None:
        record_property(SHOWN, text)

    return show


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    shown = [
        (report.nodeid, value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if isinstance(report, pytest.TestReport) and report.when == "call"
        for name, value in report.user_properties
        if name == SHOWN
    ]
    if shown:
        terminalreporter.section("shown by the tests")
        for nodeid, text in sorted(shown, key=lambda pair: str(pair[0])):
            terminalreporter.write_line(f"{nodeid}:\n{text}")


@pytest.fixture(scope="session")
def promtool(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The path of ``promtool``, installed from Debian's ``prometheus`` package where missing.

    Never a skip: a check that did not run must not look like one that passed.
    """
    # One install at a time: pytest-xdist's workers share this machine's dpkg lock, and
    # apt-get fails at once on a lock that is held. The workers share the base temp's parent.
    with (tmp_path_factory.getbasetemp().parent / "promtool.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
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
