"""What many tests share: the project's root, a Twilio account SID, a stored instance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.instances.model import Instance

__all__ = ["ACCOUNT", "CHART", "INSTANCE_ACCOUNT", "README", "ROOT", "SCHEMAS", "stored_instance"]

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
CHART = ROOT / "helm" / "twilio-kafka-bridge"
README = ROOT / "README.md"
# Test account SIDs: any 32 hex digits will do; an instance's differs from the settings' one.
ACCOUNT = "AC" + "0" * 32
INSTANCE_ACCOUNT = "AC" + "c" * 32


def stored_instance(
    name: str,
    account_sid: str,
    auth_token: str,
    *,
    revision: int = 1,
    tags: tuple[str, ...] = (),
    **configuration: Any,
) -> Instance:
    """Instance ``name`` of ``account_sid`` with ``auth_token``, plus ``configuration``."""
    return Instance.model_validate(
        {
            "name": name,
            "configuration": {
                "account_sid": account_sid,
                "auth_token": auth_token,
                **configuration,
            },
            "tags": list(tags),
            "revision": revision,
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-02T00:00:00.000Z",
        }
    )
