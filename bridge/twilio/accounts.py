"""The Twilio accounts a bridge can act for: static credentials from settings, plus instances.

Everything that needs an account asks this registry by name (envelopes' ``credential``) or by
``AccountSid`` (webhooks), at the moment it needs it, so an instance created, changed or
deleted on any replica takes effect without a restart. Pure: the instances topic feeds it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from bridge.config import Credential, SendDefaults, TwilioSettings, WebhookSettings
from bridge.twilio.ratelimit import Limits
from bridge.twilio.retry import RetryPolicy

__all__ = ["DEFAULT_RESOURCES", "Account", "Accounts", "basic_auth_header", "event_topic"]

DEFAULT_RESOURCES = ("messages",)


def event_topic(settings: WebhookSettings, family: str, accounts: Iterable[Account]) -> str:
    """Where an event of ``family`` goes: an instance's own topic for it, else the bridge's."""
    for account in accounts:
        if family in account.topics:
            return account.topics[family]
    return settings.topic_for(family)


def basic_auth_header(credential: Credential) -> str:
    """The ``Authorization`` value for a credential; computed once, never logged."""
    token = f"{credential.username}:{credential.password.get_secret_value()}"
    return "Basic " + base64.b64encode(token.encode()).decode()


@dataclass(frozen=True, slots=True)
class Account:
    """One account as the bridge uses it; ``None`` settings fall back to the bridge's own."""

    name: str
    credential: Credential = field(repr=False)
    auth: str = field(repr=False, compare=False)
    source: str = "settings"  # or "instance"
    webhooks: bool = True
    polls: bool = False
    refresh_interval_s: float | None = None
    resources: tuple[str, ...] = DEFAULT_RESOURCES
    topics: Mapping[str, str] = field(default_factory=dict)
    twilio: TwilioSettings | None = None
    filter_nulls: bool | None = None
    retry: RetryPolicy | None = None
    rate_limit: Limits | None = None
    # Sender, tracking and callback defaults for CreateMessage / CreateCall.
    defaults: SendDefaults = field(default_factory=SendDefaults)

    @property
    def account_sid(self) -> str:
        """The account's SID (``AC…``)."""
        return self.credential.account_sid

    @property
    def auth_token(self) -> str | None:
        """The Auth Token, which signs this account's webhooks (API keys do not)."""
        token = self.credential.auth_token
        return token.get_secret_value() if token is not None else None

    @classmethod
    def from_settings(cls, name: str, credential: Credential, *, calls: bool) -> Account:
        """A static credential: webhooks always accepted, polled when ``poll`` is set."""
        return cls(
            name=name,
            credential=credential,
            auth=basic_auth_header(credential),
            polls=credential.poll,
            resources=("messages", "calls") if calls else DEFAULT_RESOURCES,
            defaults=SendDefaults.of(credential),
        )


class Accounts:
    """Static credentials and live instances by name; instances never shadow a static name."""

    def __init__(self, static: Mapping[str, Credential] | None = None, *, calls: bool = False):
        self._static = {
            name: Account.from_settings(name, cred, calls=calls)
            for name, cred in (static or {}).items()
        }
        self._instances: dict[str, Account] = {}
        self._gone: dict[str, str] = {}  # name -> what became of it, clearer than "unknown"
        self._by_sid: dict[str, list[Account]] = {}
        for account in self._static.values():
            self._by_sid.setdefault(account.account_sid, []).append(account)

    def __len__(self) -> int:
        return len(self._static) + len(self._instances)

    def __iter__(self) -> Iterator[Account]:
        yield from self._static.values()
        yield from self._instances.values()

    def get(self, name: str) -> Account | None:
        """The account named ``name``, or None."""
        return self._static.get(name) or self._instances.get(name)

    def is_static(self, name: str) -> bool:
        """True when ``name`` is a credential from settings (not an instance's to take)."""
        return name in self._static

    def why_unknown(self, name: str) -> str:
        """Why no account is named ``name``, for the error reply."""
        gone = self._gone.get(name)
        if gone is not None:
            return f"credential '{name}' names an instance that {gone}"
        known = sorted(self._static)
        count = len(self._instances)
        listed = ", ".join(known) or "none configured"
        more = f" and {count} instances" if count else ""
        return f"unknown credential '{name}' (known: {listed}{more})"

    def by_account_sid(self, account_sid: str) -> list[Account]:
        """Every account with this SID (one Twilio account may have several credentials)."""
        return self._by_sid.get(account_sid, [])

    def put(self, account: Account) -> None:
        """Add or replace an instance's account; ignored under a static credential's name.

        The API refuses such names, but a record written before the credential was added to
        the settings may still be in the topic: its token and topics must not apply to the
        static account's webhooks, nor may the poller poll it."""
        if account.name in self._static:
            return
        self._unindex(self._instances.get(account.name))
        self._instances[account.name] = account
        self._by_sid.setdefault(account.account_sid, []).append(account)
        self._gone.pop(account.name, None)

    def remove(self, name: str, when: str) -> None:
        """An instance was deleted at ``when``: later envelopes naming it fail clearly."""
        # An instance this replica could not use is gone all the same once deleted.
        if self._drop(name) or name in self._gone:
            self._gone[name] = f"was deleted at {when}"

    def unusable(self, name: str, why: str) -> None:
        """An instance's record cannot be used here (``why``, no secret): as good as absent."""
        self._drop(name)
        self._gone[name] = f"this replica cannot use: {why}"

    def _drop(self, name: str) -> bool:
        account = self._instances.pop(name, None)
        self._unindex(account)
        return account is not None

    def _unindex(self, account: Account | None) -> None:
        if account is None:
            return
        same = [a for a in self._by_sid.get(account.account_sid, []) if a is not account]
        if same:
            self._by_sid[account.account_sid] = same
        else:
            self._by_sid.pop(account.account_sid, None)
