"""Session fixtures: a Tansu broker and a Prism Twilio mock, started by the suite itself.

Every test under ``tests/integration`` is marked ``integration``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from subprocess import Popen

import pytest
import pytest_asyncio

from bridge.tooling.local.tansu import TansuBroker
from bridge.tooling.local.twilio_mock import PrismMock
from tests.support.fast_twilio import spawn

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def tansu(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TansuBroker]:
    """A Tansu broker on a free port, for the whole session (create fresh topics per test)."""
    async with TansuBroker(log_dir=tmp_path_factory.mktemp("tansu")) as broker:
        yield broker


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def prism(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrismMock]:
    """Prism serving all 55 spec files on one port; ``prism.base_url`` has ``{domain}``.

    All of them, because the conformance test drives the whole catalog: ~3.7 s to start and
    ~260 MB, against ~2.2 s and ~190 MB for the six the other tests use.
    """
    async with PrismMock(None, log_dir=tmp_path_factory.mktemp("prism")) as mock:
        yield mock


@pytest.fixture
def mock() -> Iterator[Callable[..., str]]:
    """Start ``tests/support/fast_twilio.py`` with the given CLI args; returns its base URL."""
    started: list[Popen[str]] = []

    def start(*args: str) -> str:
        proc, port = spawn(*args)
        started.append(proc)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
