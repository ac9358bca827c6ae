"""Session fixtures: a Tansu broker and a Prism Twilio mock, started by the suite itself.

Every test under ``tests/integration`` is marked ``integration``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bridge.local.tansu import TansuBroker
from bridge.local.twilio_mock import PrismMock

__all__ = ["PRISM_SPECS"]

# One Prism process for these six costs ~2.2 s and ~190 MB; all 50 specs ~3.7 s and
# ~260 MB, with slower requests (~13 ms instead of ~9 ms each), so serve only what tests use.
PRISM_SPECS = [
    "twilio_api_v2010.json",
    "twilio_messaging_v1.json",
    "twilio_verify_v2.json",
    "twilio_conversations_v1.json",
    "twilio_content_v1.json",
    "twilio_voice_v1.json",
]
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
    """Prism serving :data:`PRISM_SPECS` on one port; ``prism.base_url`` has ``{domain}``."""
    async with PrismMock(PRISM_SPECS, log_dir=tmp_path_factory.mktemp("prism")) as mock:
        yield mock
