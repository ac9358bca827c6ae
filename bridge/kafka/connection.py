"""aiokafka connection arguments (security, TLS, SASL), shared by every Kafka client of the bridge.

Every client the bridge creates (producer, request consumer, seen-log consumer, poller
consumer, admin) takes its connection from :func:`connection_kwargs`, so one setting secures
them all. ``SSL`` and ``SASL_SSL`` always verify the broker's certificate and host name,
against ``ssl_cafile`` or else the system's trust store; with ``ssl_certfile`` (and
``ssl_keyfile`` when the key is a separate file) the bridge also presents a client
certificate (mutual TLS). Nothing here ever prompts for a key passphrase.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, NoReturn

from bridge.config import KafkaSettings, SettingsError

__all__ = ["FETCH_MAX_BYTES", "KafkaSecurityError", "connection_kwargs", "ssl_context"]

# What one fetch may bring back, for every consumer (a larger record still comes whole).
FETCH_MAX_BYTES = 1 << 20
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


class KafkaSecurityError(SettingsError):
    """The TLS files cannot be used; names the setting and the file, never a secret."""


def connection_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client, from the Kafka settings.

    Raises :class:`KafkaSecurityError` when a TLS file is missing, unreadable or unusable.
    """
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in TLS_PROTOCOLS:
        kwargs["ssl_context"] = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        # Present by construction: KafkaSettings refuses SASL without all three.
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return kwargs


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """The client TLS context: broker certificate and host name verified, TLS 1.2 or later.

    Trusts ``ssl_cafile`` if set, else the system's CA store; presents ``ssl_certfile`` (with
    ``ssl_keyfile``, or a key inside the certificate file) when set.
    """
    if settings.ssl_keyfile is not None and settings.ssl_certfile is None:
        # aiokafka would silently ignore a key without its certificate.
        raise KafkaSecurityError("kafka.ssl_keyfile is set without kafka.ssl_certfile")
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path: Path | None = getattr(settings, name)
        if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            raise KafkaSecurityError(f"kafka.{name}: {path} is not a readable file")
    try:
        # What aiokafka's create_ssl_context does, one step at a time to name the bad file.
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ssl_cafile)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaSecurityError(
            f"kafka.ssl_cafile: {settings.ssl_cafile} holds no usable CA certificate "
            f"({_reason(exc)})"
        ) from None
    if settings.ssl_certfile is not None:
        key = settings.ssl_keyfile or settings.ssl_certfile
        try:
            # OpenSSL would otherwise prompt on the terminal for an encrypted key's passphrase.
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile, _no_passphrase)
        except _EncryptedKey:
            raise KafkaSecurityError(
                f"kafka.ssl_keyfile: {key} is encrypted; the bridge needs it unencrypted"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            if _reason(exc) == "KEY_VALUES_MISMATCH":
                problem = f"{key} is not the private key of {settings.ssl_certfile}"
            else:
                problem = f"cannot load {settings.ssl_certfile} and {key} ({_reason(exc)})"
            raise KafkaSecurityError(f"kafka.ssl_certfile / kafka.ssl_keyfile: {problem}") from None
    context.minimum_version = max(context.minimum_version, ssl.TLSVersion.TLSv1_2)
    return context


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> NoReturn:
    raise _EncryptedKey


def _reason(exc: BaseException) -> str:
    """OpenSSL's reason code (or the OS error), which never quotes file contents."""
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
