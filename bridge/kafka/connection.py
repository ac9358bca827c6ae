"""aiokafka connection arguments (security, TLS, SASL) shared by consumers and producers."""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from bridge.settings import KafkaSettings

__all__ = ["connection_kwargs"]


def connection_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client, from the Kafka settings."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    if settings.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return kwargs
