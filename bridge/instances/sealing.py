"""Seal an instance's secrets for the instances topic: AES-256-GCM under the configured key. Pure.

The sealed text names the key it was sealed under (a fingerprint, not the key), so a replica
holding another key says so instead of failing obscurely, and the instance's name is bound in
as associated data, so sealed secrets copied onto another instance do not open.
"""

from __future__ import annotations

import base64
import hashlib
import os

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["SealError", "Sealer"]

_VERSION = "v1"
_NONCE_BYTES = 12


class SealError(Exception):
    """Sealed secrets that cannot be opened here; the message names no secret."""


class Sealer:
    """Seals and opens secrets under one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"twilio-bridge instances\0" + key).hexdigest()[:12]

    def seal(self, name: str, secrets: dict[str, str]) -> str:
        """``secrets`` encrypted for the instance ``name``."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, orjson.dumps(secrets), name.encode())
        text = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{_VERSION}.{self.key_id}.{text}"

    def open(self, name: str, sealed: str) -> dict[str, str]:
        """The secrets of instance ``name``; raises ``SealError`` saying why not."""
        version, key_id, text = (sealed.split(".", 2) + ["", ""])[:3]
        if version != _VERSION:
            raise SealError(f"sealed in an unknown format {version[:8]!r}")
        if key_id != self.key_id:
            raise SealError(f"sealed under key {key_id[:12]!r}, this replica has {self.key_id!r}")
        try:
            raw = base64.urlsafe_b64decode(text.encode())
            clear = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], name.encode())
            secrets = orjson.loads(clear)
        except (ValueError, InvalidTag, orjson.JSONDecodeError):
            raise SealError(
                "sealed secrets do not open: altered, or sealed for another name"
            ) from None
        if not isinstance(secrets, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in secrets.items()
        ):
            raise SealError("sealed secrets are not a map of names to text")
        return secrets
