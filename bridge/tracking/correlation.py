"""How a tracked send is correlated with its callbacks, and how its request is completed. Pure.

The status callback URL carries one thing: an opaque random token (``?tracking=…``, 144 bits),
under ``BRIDGE_WEBHOOK__PUBLIC_URL``. Everything it stands for (request id, Kafka key,
metadata) lives in the state topic under that token, written before the create call is sent,
so a callback finds it on any replica, before Twilio's answer, after restarts. Twilio signs the
URL with the token in it: a forged or altered token fails the signature check.

``decide`` also applies the account's defaults for sends: a sender for ``CreateMessage``
without one, and the account's own ``status_callback`` for sends that are not tracked.
"""

from __future__ import annotations

import re
import secrets
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bridge.config import SendDefaults, TrackingSettings
from bridge.contract.deliveries import Resource
from bridge.contract.envelopes import AdvancedRequest, BasicRequest
from bridge.contract.errors import RequestInvalid
from bridge.tracking.send import TrackedSend
from bridge.twilio.accounts import Account
from bridge.twilio.calls import TwilioCall
from bridge.twilio.encoding import encode_form, parse_form

__all__ = [
    "CALL_EVENTS",
    "FAMILIES",
    "TOKEN_PARAM",
    "Choice",
    "callback_url",
    "decide",
    "new_token",
    "partition_of",
    "token_in",
    "trackable",
]

TOKEN_PARAM = "tracking"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{24}$")
# The webhook family each resource's callbacks come to, and back.
FAMILIES: dict[Resource, str] = {"message": "message-status", "call": "call-status"}
CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
_PATH = re.compile(r"^/2010-04-01/Accounts/AC[0-9a-fA-F]{32}/(Messages|Calls)\.json$")
_RESOURCES: dict[str, Resource] = {"Messages": "message", "Calls": "call"}
Request = BasicRequest | AdvancedRequest


def new_token() -> str:
    """A fresh correlation token: 18 random bytes, URL-safe base64 (24 characters)."""
    return secrets.token_urlsafe(18)


def token_in(url: str) -> str | None:
    """The correlation token in a callback URL, when it carries a well-formed one."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    tokens = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == TOKEN_PARAM]
    return tokens[0] if len(tokens) == 1 and _TOKEN.match(tokens[0]) else None


def callback_url(public_url: str, resource: Resource, token: str) -> str:
    """The StatusCallback URL of a tracked send."""
    return f"{public_url}/webhooks/twilio/{FAMILIES[resource]}?{TOKEN_PARAM}={token}"


def partition_of(token: str, partitions: int) -> int:
    """The state partition of a token: its owner processes its callbacks and reconciles it."""
    return zlib.crc32(token.encode()) % partitions


def trackable(call: TwilioCall) -> Resource | None:
    """The resource a call creates when its statuses can be tracked (messages and calls of the
    2010 API), else None."""
    if call.method != "POST" or call.api not in (None, "api.v2010"):
        return None
    found = _PATH.match(call.path)
    return _RESOURCES[found.group(1)] if found else None


@dataclass(frozen=True, slots=True)
class Choice:
    """The request to send (defaults and callback applied) and, when tracked, its state."""

    request: Request
    send: TrackedSend | None = None


def decide(
    request: Request,
    call: TwilioCall,
    *,
    settings: TrackingSettings,
    public_url: str | None,
    token: str,
    key: bytes | None,
    now: float,
) -> Choice:
    """What to send for ``request``, whose call was built as ``call``; raises
    ``RequestInvalid`` when it asks for tracking that cannot be done."""
    resource = trackable(call)
    account = call.account
    if resource is None:
        if request.track:
            raise RequestInvalid(
                "track: only CreateMessage and CreateCall (or an advanced POST to "
                "/2010-04-01/Accounts/{AccountSid}/Messages.json or Calls.json) can be tracked",
                invalid=["track"],
            )
        return Choice(request)
    defaults = account.defaults
    given = _names(request)
    request = _with(request, _sender(resource, given, defaults))
    track = _choice(request.track, defaults.track, settings.default)
    refusal = _no_callbacks(given, account) if track else None
    if refusal is not None:
        if request.track:
            raise RequestInvalid(refusal, invalid=["track"])
        # A default gives way to the requester's own callback, and to an account whose
        # callbacks would be refused.
        track = False
    if not track:
        own = defaults.status_callback
        added = {"StatusCallback": own} if own is not None and "StatusCallback" not in given else {}
        return Choice(_with(request, added))
    return _tracked(request, resource, given, account, public_url, token=token, key=key, now=now)


def _tracked(
    request: Request,
    resource: Resource,
    given: set[str],
    account: Account,
    public_url: str | None,
    *,
    token: str,
    key: bytes | None,
    now: float,
) -> Choice:
    """The request with the bridge's callback on it, and the state of the send it tracks."""
    problem = _untrackable(public_url, account)
    if problem is not None:
        raise RequestInvalid(problem, invalid=["track"])
    assert public_url is not None
    extra: dict[str, Any] = {"StatusCallback": callback_url(public_url, resource, token)}
    if resource == "call" and "StatusCallbackEvent" not in given:
        extra["StatusCallbackEvent"] = list(CALL_EVENTS)
    send = TrackedSend(
        token=token,
        request_id=request.id,
        key=key,
        metadata=request.metadata,
        resource=resource,
        account_sid=account.account_sid,
        credential=account.name,
        created_at=now,
        reads=resource == "message" and TrackedSend.reads_after_delivery(_value(request, "To")),
    )
    return Choice(_with(request, extra), send)


def _choice(*choices: bool | None) -> bool:
    """The first choice made: the envelope's, the account's, the bridge's."""
    return next((choice for choice in choices if choice is not None), False)


def _no_callbacks(given: set[str], account: Account) -> str | None:
    """Why the bridge would get no callbacks for this send, or None: the requester's own
    ``StatusCallback``, or an account whose callbacks the webhook receiver refuses (403
    ``events_off``), on which a tracked send could never end."""
    if "StatusCallback" in given:
        return (
            "track: the bridge sets StatusCallback when it tracks a send; leave "
            "StatusCallback out of the body, or set track to false"
        )
    if not account.webhooks:
        return (
            f"track: instance '{account.name}' does not take events by webhook (it polls, or "
            "its events are off), and status callbacks are webhooks"
        )
    return None


def _untrackable(public_url: str | None, account: Account) -> str | None:
    if public_url is None:
        return (
            "track needs BRIDGE_WEBHOOK__PUBLIC_URL: the base URL at which Twilio calls the "
            "bridge with status callbacks"
        )
    if account.auth_token is None:
        return (
            f"track: the bridge does not know the Auth Token of credential '{account.name}' (an "
            "API key only), and Twilio signs status callbacks with it: they could not be checked"
        )
    return None


def _sender(resource: Resource, given: set[str], defaults: SendDefaults) -> dict[str, Any]:
    """The account's default sender, for a message that names none."""
    if resource != "message" or given & {"From", "MessagingServiceSid"}:
        return {}
    if defaults.default_messaging_service_sid is not None:
        return {"MessagingServiceSid": defaults.default_messaging_service_sid}
    if defaults.default_from is not None:
        return {"From": defaults.default_from}
    return {}


def _body(request: Request) -> Mapping[str, Any] | list[tuple[str, str]]:
    body = request.body
    if isinstance(body, str):
        try:
            return parse_form(body)
        except ValueError:
            return []  # refused by the call builder already
    return body or {}


def _names(request: Request) -> set[str]:
    body = _body(request)
    return {name for name, _ in body} if isinstance(body, list) else set(body)


def _value(request: Request, name: str) -> Any:
    body = _body(request)
    return dict(body).get(name) if isinstance(body, list) else body.get(name)


def _with(request: Request, extra: Mapping[str, Any]) -> Request:
    """``request`` with the parameters in ``extra`` added to its body."""
    if not extra:
        return request
    body = request.body
    if isinstance(body, str):
        added = encode_form(extra)
        return request.model_copy(update={"body": f"{body}&{added}" if body else added})
    return request.model_copy(update={"body": {**(body or {}), **extra}})
