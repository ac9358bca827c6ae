"""A stored instance for unit tests, built like the instances topic would give it."""

from __future__ import annotations

from typing import Any

from bridge.instances.model import Instance


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
