"""Stoplight Prism serving Twilio's official OpenAPI spec: a Twilio API mock on loopback.

Several specs are served by ONE Prism process on one port: :func:`mock_spec` merges them
with every path under ``/{domain}`` (``/verify/v2/Services``), which matches the bridge's
``{domain}`` base URL. Measured (Prism 5.14, 2 cores, start-up / RSS): api_v2010 alone
2.2 s / 185 MB, 6 specs 2.2 s / 190 MB, all 50 3.7 s / 260 MB. One Prism per spec behind a
proxy would cost 6.6 s / 940 MB for 6 specs and 44 s / 7.4 GB for 50.

Prism answers 422 for a request that violates the spec without ``--errors``; that flag only
adds response checks, which turn some of Twilio's own examples into 500s, so it is not used.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bridge.tooling.local.cache import cache_dir, run_npm
from bridge.tooling.local.process import LocalProcess
from bridge.tooling.local.tansu import free_port
from bridge.tooling.local.twilio_spec import all_spec_names, ensure_spec, mock_spec

__all__ = ["PRISM_PACKAGE", "PrismMock", "ensure_prism", "ensure_spec"]

PRISM_PACKAGE = "@stoplight/prism-cli@5"


def ensure_prism() -> Path:
    """The ``prism`` executable, installed with npm into the cache on first use."""
    target = cache_dir() / "prism-cli-5"
    binary = target / "node_modules" / ".bin" / "prism"
    if binary.exists():
        return binary
    tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".prism-"))
    try:
        # An own package.json keeps npm from walking up to some enclosing project.
        (tmp / "package.json").write_text('{"private": true}\n')
        run_npm(["install", "--no-audit", "--no-fund", PRISM_PACKAGE], cwd=tmp)
        try:
            os.replace(tmp, target)  # .bin links are relative, so the tree can move
        except OSError:
            if not binary.exists():  # else another process installed it first: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return binary


class PrismMock(LocalProcess):
    """Prism for the given spec files (default: all 55) on one free loopback port."""

    name = "prism"

    def __init__(
        self,
        specs: Sequence[str] | None = None,
        *,
        start_timeout_s: float = 120,
        log_dir: Path | None = None,
    ) -> None:
        self.specs = list(specs) if specs is not None else None
        self.port = free_port()
        self.start_timeout_s = start_timeout_s
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="prism-")) / "prism.log"
        self.domains: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        """The bridge's base URL for every served domain: ``http://127.0.0.1:PORT/{domain}``."""
        return self.url_for("{domain}")

    def url_for(self, domain: str) -> str:
        """The base URL standing for ``https://DOMAIN.twilio.com``."""
        return f"http://127.0.0.1:{self.port}/{domain}"

    @property
    def plain_base_url(self) -> str:
        """``http://127.0.0.1:PORT``; only when a single spec is served."""
        if self.specs is None or len(self.specs) != 1:
            raise AttributeError("plain_base_url needs exactly one spec")
        return f"http://127.0.0.1:{self.port}"

    def _launch(self) -> None:
        prism = ensure_prism()
        names = self.specs if self.specs is not None else all_spec_names()
        spec = mock_spec(names, plain=len(names) == 1)
        self.domains = spec.domains
        command = [str(prism), "mock", "-h", "127.0.0.1", "-p", str(self.port), str(spec.path)]
        self._spawn(command)

    async def wait_ready(self) -> None:
        """Poll until Prism answers HTTP (it listens only once the spec is loaded)."""
        # Not listening yet; TimeoutError is an OSError too.
        await self._until_ready(self._answers, (OSError,), self.start_timeout_s, 0.05)

    async def _answers(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b"GET /__ready HTTP/1.0\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        await writer.wait_closed()
        if not status.startswith(b"HTTP/"):
            raise ConnectionError(f"not an HTTP answer: {status[:40]!r}")
