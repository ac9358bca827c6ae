"""Twilio webhook signatures, checked exactly as ``twilio.request_validator`` (9.13) does. Pure.

What is signed: the full URL Twilio called (query included), then for a form POST every
parameter as ``name + value``, names sorted, each name's distinct values sorted (a value repeated
under one name counts once, as in the official validator). GET webhooks and JSON bodies add
nothing: a JSON body is covered instead by a ``bodySHA256`` query parameter, the hex SHA-256 of
the raw body, which must match (here whenever the URL carries one); a non-form body without it
is refused, because the signature would not cover it. The signature is the base64 HMAC of that
UTF-8 string, in the ``X-Twilio-Signature`` header.

Key and algorithm: by default HMAC-SHA1 keyed by the account's Auth Token. When Twilio signs with
a SharedKey (a Webhook Setting names one), it also sends ``X-Twilio-Webhooks-Signature-Settings:
key=<SharedKey id>,algorithm=HMAC_SHA256``; the signature is then still in
``X-Twilio-Signature``, over the same string, but keyed by that SharedKey's secret with the named
algorithm (HMAC_SHA1 when ``algorithm=`` is absent; anything but HMAC_SHA1/HMAC_SHA256 fails).

Ports: Twilio is inconsistent about the port, so the URL is tried as given, with the port added
when it has none (443 for https, 80 for any other scheme) and without its port when it has one
(any port, default or not, as the official validator does).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, urlparse

__all__ = [
    "HMAC_SHA1",
    "HMAC_SHA256",
    "SIGNATURE_HEADER",
    "SIGNATURE_SETTINGS_HEADER",
    "SignatureInvalid",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
HMAC_SHA1 = "HMAC_SHA1"
HMAC_SHA256 = "HMAC_SHA256"

_DIGESTS = {HMAC_SHA1: "sha1", HMAC_SHA256: "sha256"}
# Key ids come from a request header: keep what reaches a reason (and so a log) short.
_MAX_KEY_ID_SHOWN = 64


class SignatureInvalid(Exception):
    """The request is not signed by Twilio; ``reason`` says why, never containing a secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sign(url: str, form: Sequence[tuple[str, str]], secret: str, algorithm: str = HMAC_SHA1) -> str:
    """The X-Twilio-Signature value for ``url`` and ``form``, keyed by ``secret``.

    Raises ``ValueError`` for an algorithm other than HMAC_SHA1 or HMAC_SHA256.
    """
    digest = _DIGESTS.get(algorithm.upper())
    if digest is None:
        raise ValueError(f"unsupported signature algorithm {algorithm!r}")
    return _signature(url + _signed_params(form), secret.encode("utf-8"), digest)


def _signed_params(form: Sequence[tuple[str, str]]) -> str:
    """The form's part of the signed string: ``name + value``, names sorted, each name's
    distinct values sorted."""
    # Sorting the distinct (name, value) pairs sorts by name, then by value within a name.
    return "".join([name + value for name, value in sorted(set(form))])


def _signature(signed: str, key: bytes, digest: str) -> str:
    return base64.b64encode(hmac.digest(key, signed.encode("utf-8"), digest)).decode("ascii")


def verify_signature(
    url: str,
    form: Sequence[tuple[str, str]],
    body: bytes,
    headers: Mapping[str, str],
    auth_token: str | None,
    shared_keys: Mapping[str, str],
) -> None:
    """Raise ``SignatureInvalid`` unless Twilio signed this request (see the module docstring).

    ``form`` must keep blank values (``parse_qsl(..., keep_blank_values=True)``): Twilio signs them.
    """
    given = headers.get(SIGNATURE_HEADER)
    if not given:
        raise SignatureInvalid("missing X-Twilio-Signature")
    secret, algorithm = _secret(headers, auth_token, shared_keys)
    urls = _url_variants(url)
    _check_body_hash(url, form, body)
    given_bytes = given.encode("utf-8")
    matched = False
    try:
        # Every variant is computed, so the time taken does not tell which one matched.
        params = _signed_params(form)
        key, digest = secret.encode("utf-8"), _DIGESTS[algorithm]
        for candidate in urls:
            expected = _signature(candidate + params, key, digest).encode("ascii")
            matched |= hmac.compare_digest(expected, given_bytes)
    except UnicodeEncodeError:
        raise SignatureInvalid("the URL or a parameter is not valid Unicode") from None
    if not matched:
        raise SignatureInvalid("signature does not match")


def _secret(
    headers: Mapping[str, str], auth_token: str | None, shared_keys: Mapping[str, str]
) -> tuple[str, str]:
    settings_header = headers.get(SIGNATURE_SETTINGS_HEADER, "").strip()
    if not settings_header:
        # An empty key would make the HMAC forgeable by anyone.
        if not auth_token:
            raise SignatureInvalid("no Auth Token known for the account")
        return auth_token, HMAC_SHA1
    settings: dict[str, str] = {}
    for part in settings_header.split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip() and value.strip():
            settings.setdefault(name.strip(), value.strip())
    algorithm = settings.get("algorithm", HMAC_SHA1).upper()
    if algorithm not in _DIGESTS:
        raise SignatureInvalid(f"unsupported signature algorithm {_shown(algorithm)}")
    key_id = settings.get("key")
    if key_id is None:
        raise SignatureInvalid("X-Twilio-Webhooks-Signature-Settings names no key")
    secret = shared_keys.get(key_id)
    if not secret:
        raise SignatureInvalid(f"unknown SharedKey key id {_shown(key_id)}")
    return secret, algorithm


def _url_variants(url: str) -> tuple[str, ...]:
    # One family's webhooks come to one URL: its variants are worked out once.
    return _cached_url_variants(url) if len(url) <= _CACHED_URL_LENGTH else _variants(url)


def _variants(url: str) -> tuple[str, ...]:
    try:
        parsed = urlparse(url)
    except ValueError:  # "Invalid IPv6 URL"
        raise SignatureInvalid("the URL is not valid") from None
    try:
        port = parsed.port
    except ValueError:
        raise SignatureInvalid("the URL has an invalid port") from None
    if port:
        with_port = parsed.geturl()
        # rpartition, not split(":")[0] as the official validator has it, keeps userinfo and
        # IPv6 hosts intact; for a plain host:port the result is the same.
        without_port = parsed._replace(netloc=parsed.netloc.rpartition(":")[0]).geturl()
    else:
        default = 443 if parsed.scheme == "https" else 80
        with_port = parsed._replace(netloc=f"{parsed.netloc}:{default}").geturl()
        without_port = parsed.geturl()
    return tuple(dict.fromkeys((url, with_port, without_port)))


_CACHED_URL_LENGTH = 1024
# A SignatureInvalid (an invalid URL or port) is raised anew each time: lru_cache keeps no errors.
_cached_url_variants = functools.lru_cache(maxsize=256)(_variants)


def _check_body_hash(url: str, form: Sequence[tuple[str, str]], body: bytes) -> None:
    # Parsing the query is skipped only when no parameter can be called bodySHA256, not even
    # percent- or plus-encoded; the URL parsed already in _url_variants.
    query = url.partition("?")[2]
    maybe = "bodySHA256" in query or "%" in query or "+" in query
    claimed = parse_qs(urlparse(url).query).get("bodySHA256") if maybe else None
    if claimed:
        actual = hashlib.sha256(body).hexdigest().encode("ascii")
        if not hmac.compare_digest(claimed[0].encode("utf-8"), actual):
            raise SignatureInvalid("bodySHA256 does not match the body")
    elif body and not form:
        raise SignatureInvalid("missing bodySHA256 for a non-form body")


def _shown(value: str) -> str:
    return repr(value[:_MAX_KEY_ID_SHOWN])
