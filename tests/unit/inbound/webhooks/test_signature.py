"""verify_signature against Twilio's own RequestValidator, used here as the reference signer."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator, get_signature_algorithm

from bridge.inbound.webhooks.signature import SignatureInvalid, sign, verify_signature

TOKEN = "a3f5c0de9b8a7f6e5d4c3b2a1f0e9d8c"
OTHER_TOKEN = "0000c0de9b8a7f6e5d4c3b2a1f0e9d8c"
KEY_ID = "webhooks_sharedkey_01jw0000000000000000000000"
KEY_SECRET = "sk-secret-Zm9vYmFyYmF6cXV4"
SETTINGS = f"key={KEY_ID},algorithm=HMAC_SHA256"
URL = "https://bridge.example.com/twilio/messages?tenant=acme&x=%20y"
FORM = [
    ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
    ("Body", "Grüße 👋 – ça va?"),
    ("MediaUrl", "https://b.example/2"),
    ("MediaUrl", "https://a.example/1"),
    ("FromCity", ""),
    ("To", "+15005550006"),
]
SECRETS = (TOKEN, OTHER_TOKEN, KEY_SECRET)


class MultiDict:
    """The Flask-style multi-dict the official validator reads repeated keys from (getall)."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._pairs = list(pairs)

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self._pairs])

    def __len__(self) -> int:
        return len(self._pairs)

    def getall(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]


def official(
    url: str, form: Sequence[tuple[str, str]], secret: str = TOKEN, algorithm: str | None = None
) -> str:
    signature: str = RequestValidator(secret).compute_signature(url, MultiDict(form), algorithm)
    return signature


def classic(signature: str) -> dict[str, str]:
    return {"x-twilio-signature": signature}


def shared(signature: str, settings: str = SETTINGS) -> dict[str, str]:
    return {"x-twilio-signature": signature, "x-twilio-webhooks-signature-settings": settings}


def refusal(
    url: str,
    form: Sequence[tuple[str, str]],
    body: bytes,
    headers: Mapping[str, str],
    auth_token: str | None = TOKEN,
    shared_keys: Mapping[str, str] | None = None,
) -> str:
    with pytest.raises(SignatureInvalid) as caught:
        verify_signature(url, form, body, headers, auth_token, shared_keys or {})
    reason = caught.value.reason
    assert str(caught.value) == reason
    assert not any(secret in reason for secret in SECRETS)
    signature = headers.get("x-twilio-signature")
    assert not signature or signature not in reason
    return reason


def json_request(payload: object) -> tuple[str, bytes]:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    digest = RequestValidator(TOKEN).compute_hash(body.decode("utf-8"))
    return f"https://bridge.example.com/twilio/events?bodySHA256={digest}", body


# --- accepted -----------------------------------------------------------------------------------


def test_form_post_with_repeated_keys_blank_and_unicode_values() -> None:
    assert RequestValidator(TOKEN).validate(URL, MultiDict(FORM), official(URL, FORM))
    verify_signature(URL, FORM, b"ignored", classic(official(URL, FORM)), TOKEN, {})


def test_form_order_does_not_matter() -> None:
    verify_signature(URL, FORM[::-1], b"", classic(official(URL, FORM)), TOKEN, {})


def test_sign_matches_the_official_signer() -> None:
    assert sign(URL, FORM, TOKEN) == official(URL, FORM)
    assert sign(URL, FORM, KEY_SECRET, "hmac_sha256") == official(
        URL, FORM, KEY_SECRET, "HMAC_SHA256"
    )
    with pytest.raises(ValueError, match="unsupported"):
        sign(URL, FORM, TOKEN, "HMAC_MD5")


def test_repeated_identical_pair_counts_once_as_in_the_official_validator() -> None:
    doubled = [*FORM, ("To", "+15005550006")]
    assert official(URL, doubled) == official(URL, FORM)
    verify_signature(URL, doubled, b"", classic(official(URL, FORM)), TOKEN, {})


def test_get_with_query() -> None:
    url = "https://bridge.example.com/twilio/voice?CallSid=CA123&From=%2B15005550006&Digits=1"
    verify_signature(url, [], b"", classic(official(url, [])), TOKEN, {})


def test_json_body_with_body_sha256() -> None:
    url, body = json_request({"CallSid": "CA123", "Caller": "+12349013030", "Note": "é"})
    signature = official(url, [])
    assert RequestValidator(TOKEN).validate(url, body.decode("utf-8"), signature)
    verify_signature(url, [], body, classic(signature), TOKEN, {})


@pytest.mark.parametrize(
    ("signed_url", "received_url"),
    [
        ("https://h.example/p?a=1", "https://h.example:443/p?a=1"),
        ("https://h.example:443/p?a=1", "https://h.example/p?a=1"),
        ("http://h.example/p?a=1", "http://h.example:80/p?a=1"),
        ("http://h.example:80/p?a=1", "http://h.example/p?a=1"),
        ("https://h.example:443/p", "https://h.example:443/p"),
        ("http://h.example/p", "http://h.example/p"),
        # As in the official validator, any port is also tried removed.
        ("https://h.example/p", "https://h.example:8443/p"),
    ],
)
def test_port_variants(signed_url: str, received_url: str) -> None:
    signature = official(signed_url, FORM)
    assert RequestValidator(TOKEN).validate(received_url, MultiDict(FORM), signature)
    verify_signature(received_url, FORM, b"", classic(signature), TOKEN, {})


@pytest.mark.parametrize(
    ("signed_url", "received_url"),
    [
        ("http://h.example:443/p", "http://h.example/p"),  # http adds 80, never 443
        ("https://h.example:80/p", "https://h.example/p"),  # https adds 443, never 80
        ("https://h.example:8443/p", "https://h.example/p"),  # only default ports are added
    ],
)
def test_ports_the_official_validator_does_not_try(signed_url: str, received_url: str) -> None:
    signature = official(signed_url, FORM)
    assert not RequestValidator(TOKEN).validate(received_url, MultiDict(FORM), signature)
    reason = refusal(received_url, FORM, b"", classic(signature))
    assert reason == "signature does not match"


def test_port_is_removed_without_harming_userinfo() -> None:
    signature = official("https://u:p@h.example/p", FORM)
    verify_signature("https://u:p@h.example:443/p", FORM, b"", classic(signature), TOKEN, {})


def test_shared_key() -> None:
    algorithm = get_signature_algorithm(SETTINGS)
    assert algorithm == "HMAC_SHA256"
    signature = official(URL, FORM, KEY_SECRET, algorithm)
    assert RequestValidator(KEY_SECRET).validate(URL, MultiDict(FORM), signature, algorithm)
    keys = {"other": OTHER_TOKEN, KEY_ID: KEY_SECRET}
    verify_signature(URL, FORM, b"", shared(signature), None, keys)


def test_shared_key_json_body_and_port() -> None:
    url, body = json_request({"a": 1})
    signature = official(url.replace(".com/", ".com:443/"), [], KEY_SECRET, "HMAC_SHA256")
    verify_signature(url, [], body, shared(signature), None, {KEY_ID: KEY_SECRET})


def test_shared_key_without_algorithm_is_sha1_as_in_the_official_validator() -> None:
    assert get_signature_algorithm(f"key={KEY_ID}") == "HMAC_SHA1"
    signature = official(URL, FORM, KEY_SECRET, "HMAC_SHA1")
    verify_signature(
        URL, FORM, b"", shared(signature, f" key = {KEY_ID} "), None, {KEY_ID: KEY_SECRET}
    )


# --- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"x-twilio-signature": ""}])
def test_missing_signature(headers: dict[str, str]) -> None:
    assert refusal(URL, FORM, b"", headers) == "missing X-Twilio-Signature"


def test_wrong_token() -> None:
    reason = refusal(URL, FORM, b"", classic(official(URL, FORM, OTHER_TOKEN)))
    assert reason == "signature does not match"


def test_changed_param_value() -> None:
    changed = [(name, "Hello" if name == "Body" else value) for name, value in FORM]
    assert refusal(URL, changed, b"", classic(official(URL, FORM))) == "signature does not match"


def test_extra_param() -> None:
    extra = [*FORM, ("Admin", "1")]
    assert refusal(URL, extra, b"", classic(official(URL, FORM))) == "signature does not match"


def test_changed_query() -> None:
    other = URL.replace("acme", "evil")
    assert refusal(other, FORM, b"", classic(official(URL, FORM))) == "signature does not match"


def test_body_changed_under_a_valid_body_sha256_url() -> None:
    url, body = json_request({"CallSid": "CA123"})
    signature = official(url, [])
    forged = body.replace(b"CA123", b"CA999")
    assert not RequestValidator(TOKEN).validate(url, forged.decode("utf-8"), signature)
    assert refusal(url, [], forged, classic(signature)) == "bodySHA256 does not match the body"


def test_json_body_without_body_sha256() -> None:
    # Twilio always adds bodySHA256 to a JSON webhook; without it nothing signed covers the body.
    url = "https://bridge.example.com/twilio/events"
    reason = refusal(url, [], b'{"CallSid": "CA123"}', classic(official(url, [])))
    assert reason == "missing bodySHA256 for a non-form body"


@pytest.mark.parametrize("token", [None, ""])
def test_no_auth_token_known(token: str | None) -> None:
    reason = refusal(URL, FORM, b"", classic(official(URL, FORM)), auth_token=token)
    assert reason == "no Auth Token known for the account"


def test_unknown_shared_key_id() -> None:
    signature = official(URL, FORM, KEY_SECRET, "HMAC_SHA256")
    headers = shared(signature, "key=k1,algorithm=HMAC_SHA256")
    reason = refusal(URL, FORM, b"", headers, shared_keys={KEY_ID: KEY_SECRET})
    assert reason == "unknown SharedKey key id 'k1'"


def test_wrong_shared_key_secret() -> None:
    signature = official(URL, FORM, OTHER_TOKEN, "HMAC_SHA256")
    reason = refusal(URL, FORM, b"", shared(signature), shared_keys={KEY_ID: KEY_SECRET})
    assert reason == "signature does not match"


def test_shared_key_signature_is_not_checked_against_the_auth_token() -> None:
    signature = official(URL, FORM, TOKEN, "HMAC_SHA256")
    reason = refusal(URL, FORM, b"", shared(signature), shared_keys={KEY_ID: KEY_SECRET})
    assert reason == "signature does not match"


def test_shared_key_settings_without_a_key() -> None:
    headers = shared(official(URL, FORM), "algorithm=HMAC_SHA256")
    reason = refusal(URL, FORM, b"", headers, shared_keys={KEY_ID: KEY_SECRET})
    assert reason == "X-Twilio-Webhooks-Signature-Settings names no key"


def test_unsupported_algorithm() -> None:
    headers = shared(official(URL, FORM), f"key={KEY_ID},algorithm=HMAC_MD5")
    reason = refusal(URL, FORM, b"", headers, shared_keys={KEY_ID: KEY_SECRET})
    assert reason == "unsupported signature algorithm 'HMAC_MD5'"


def test_invalid_port() -> None:
    url = "https://h.example:99999/p"
    assert refusal(url, [], b"", classic(sign(url, [], TOKEN))) == "the URL has an invalid port"


def test_signature_with_non_ascii_characters_is_refused_not_crashing() -> None:
    assert refusal(URL, FORM, b"", classic("é" * 28)) == "signature does not match"


def test_long_key_id_is_shortened_in_the_reason() -> None:
    headers = shared("x", "key=" + "k" * 500)
    assert len(refusal(URL, [], b"", headers)) < 120


# --- property -----------------------------------------------------------------------------------

_names = st.text(min_size=1, max_size=12)
_values = st.text(max_size=20)
_forms = st.dictionaries(_names, st.lists(_values, min_size=1, max_size=3, unique=True), max_size=6)
_hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6}){1,2}", fullmatch=True)
_paths = st.from_regex(r"(/[A-Za-z0-9._~%-]{0,10}){0,4}", fullmatch=True)
_queries = st.lists(st.tuples(_names, _values), max_size=3)


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    scheme = draw(st.sampled_from(["http", "https"]))
    port = draw(st.sampled_from(["", ":80", ":443", ":8080"]))
    query = "&".join(f"{k}={v}" for k, v in draw(_queries))
    url = f"{scheme}://{draw(_hosts)}{port}{draw(_paths)}" + (f"?{query}" if query else "")
    form = [(name, value) for name, values in draw(_forms).items() for value in values]
    return url, draw(st.permutations(form))


@given(request=_requests(), index=st.integers(min_value=0), replacement=_values, data=st.data())
def test_official_signatures_verify_and_any_changed_value_fails(
    request: tuple[str, list[tuple[str, str]]], index: int, replacement: str, data: st.DataObject
) -> None:
    url, form = request
    signature = official(url, form)
    verify_signature(url, form, b"", classic(signature), TOKEN, {})

    if form:
        i = index % len(form)
        name, value = form[i]
        assume(replacement != value)
        changed = [*form[:i], (name, replacement), *form[i + 1 :]]
    else:
        changed = [(data.draw(_names), replacement)]
    # The official signer counts a repeated name=value pair once, so turning one value into a
    # duplicate of its neighbour can leave the signed string as it was; those are not changes.
    assume(official(url, changed) != signature)
    reason = refusal(url, changed, b"", classic(signature))
    assert reason == "signature does not match"
