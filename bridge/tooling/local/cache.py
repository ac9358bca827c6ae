"""The on-disk cache for downloaded local components, and running npm to fill it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["NodeMissingError", "cache_dir", "run_npm"]

ENV_VAR = "TWILIO_BRIDGE_CACHE"
NODE_HINT = (
    "Node.js 18+ and npm are needed for the Twilio mock (Prism); "
    "install them with: apt-get install nodejs npm"
)


class NodeMissingError(RuntimeError):
    """Node.js or npm is not installed (or too old) to run the Twilio mock."""


def cache_dir() -> Path:
    """``$TWILIO_BRIDGE_CACHE``, else ``$XDG_CACHE_HOME/twilio-bridge`` or ``~/.cache/...``."""
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".cache") / "twilio-bridge"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check_node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise NodeMissingError(NODE_HINT)
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    major = version.stdout.strip().lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < 18:
        raise NodeMissingError(f"found Node.js {version.stdout.strip() or '?'}; {NODE_HINT}")
    return npm


def run_npm(args: Sequence[str], cwd: Path, timeout_s: float = 600) -> str:
    """Run ``npm ARGS`` in ``cwd``; returns stdout, raises with npm's output on failure."""
    npm = _check_node()
    done = subprocess.run(
        [npm, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise RuntimeError(f"npm {' '.join(args)} failed (exit {done.returncode}):\n{tail}")
    return done.stdout
