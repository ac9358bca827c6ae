"""An instance as an account the bridge can act for, with its own events, endpoint and defaults."""

from __future__ import annotations

from types import MappingProxyType

from bridge.config import Credential, SendDefaults, TwilioSettings
from bridge.instances.model import Instance
from bridge.twilio.accounts import Account, basic_auth_header
from bridge.twilio.ratelimit import Limits
from bridge.twilio.retry import RetryPolicy

__all__ = ["account_of"]


def account_of(instance: Instance, twilio: TwilioSettings) -> Account:
    """An instance, with its own events, endpoint and defaults."""
    config = instance.configuration
    credential = Credential(
        account_sid=config.account_sid,
        auth_token=config.auth_token,
        api_key_sid=config.api_key_sid,
        api_key_secret=config.api_key_secret,
    )
    # Over the bridge's own: a bridge pointed at a mock (base_url) keeps every account there.
    endpoint = {
        k: v
        for k, v in (
            ("base_url", config.base_url),
            ("region", config.region),
            ("edge", config.edge),
        )
        if v is not None
    }
    events = config.events
    return Account(
        name=instance.name,
        credential=credential,
        auth=basic_auth_header(credential),
        source="instance",
        webhooks=events.enabled and events.mechanism == "webhook",
        polls=events.enabled and events.mechanism == "polling",
        refresh_interval_s=events.refresh_interval_s,
        resources=tuple(events.resources),
        topics=MappingProxyType(dict(events.topics)),
        twilio=twilio.model_copy(update=endpoint) if endpoint else None,
        filter_nulls=config.filter_nulls,
        retry=RetryPolicy(**config.retry.model_dump()) if config.retry else None,
        rate_limit=Limits.of(**config.rate_limit.model_dump()) if config.rate_limit else None,
        defaults=SendDefaults.of(config),
    )
