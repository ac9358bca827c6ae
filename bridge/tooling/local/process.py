"""The lifecycle shared by the local components: launch, wait until ready, stop the group."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["LocalProcess", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalProcess:
    """A child process in its own process group; ``async with`` or :meth:`start`/:meth:`stop`.

    Subclasses say how to launch (:meth:`_launch`, usually via :meth:`_spawn`) and how to tell
    that the process is ready (:meth:`wait_ready`).
    """

    name = "process"
    log_path: Path
    _process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    def _launch(self) -> None:
        raise NotImplementedError

    async def wait_ready(self) -> None:
        """Return once the process serves requests; raise when it cannot."""
        raise NotImplementedError

    def _spawn(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        """Start ``command``, with ``env`` added to this process's environment."""
        # A log file, not a pipe: nobody reads a pipe, and a full one would block the child.
        # Its own session: stop() reaches it and anything it forks, all at once.
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **env} if env else None,
            )

    def _exited(self) -> bool:
        return self._process is None or self._process.poll() is not None

    async def _until_ready(
        self,
        attempt: Callable[[], Awaitable[None]],
        failures: tuple[type[Exception], ...],
        timeout_s: float,
        pause_s: float,
    ) -> None:
        """Call ``attempt`` until it returns, pausing after each of ``failures``; stop the
        process and raise ``RuntimeError`` when it exits or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._exited():
                raise RuntimeError(f"{self.name} exited during start-up; see {self.log_path}")
            try:
                await attempt()
                return
            except failures as exc:
                last = exc
                await asyncio.sleep(pause_s)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {timeout_s} s ({last!r})")

    def start(self) -> Self:
        """Start and block until ready (usable with or without a running loop)."""
        self._launch()
        # A fresh loop in a worker thread, so this works even when called from async code.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, self.wait_ready()).result()
        return self

    def stop(self) -> None:
        """Stop the whole process group (SIGTERM, then SIGKILL); safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGCONT)  # a suspended process cannot act on SIGTERM
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        except ProcessLookupError:  # already gone
            process.wait(5)

    async def __aenter__(self) -> Self:
        # Launching may block for a while on first use (npm, spec merging): keep the loop free.
        await asyncio.to_thread(self._launch)
        try:
            await self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
