import pytest

from bridge.contract.envelopes import AdvancedRequest, BasicRequest, EnvelopeRejected, parse_request

BASIC = (
    b'{"id": "order-1", "mode": "basic", "operation": "CreateMessage",'
    b' "body": {"To": "+1", "MediaUrl": ["a", "b"]}, "metadata": {"order": 7}}'
)


def test_basic_and_advanced_parse() -> None:
    basic = parse_request(BASIC)
    assert isinstance(basic, BasicRequest)
    assert basic.credential == "default" and basic.response_format == "json"
    advanced = parse_request(
        b'{"id": "raw-1", "mode": "advanced", "method": "post", "path": "/x", "body": "A=1"}'
    )
    assert isinstance(advanced, AdvancedRequest)
    assert advanced.method == "POST" and advanced.body == "A=1"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "null payload (a tombstone)"),
        (b"", "empty payload"),
        (b"\xff\xfe", "not JSON"),
        (b"{", "not JSON"),
        (b'"text"', "not an object"),
        (b"[1, 2]", "not an object"),
        (b"[" * 5000 + b"]" * 5000, "not JSON"),
    ],
)
def test_non_envelopes_are_rejected_without_id(raw: bytes | None, reason: str) -> None:
    with pytest.raises(EnvelopeRejected) as info:
        parse_request(raw)
    assert reason in info.value.message
    assert info.value.request_id is None and info.value.kind == "validation"


def test_invalid_envelope_names_every_problem_and_keeps_the_id() -> None:
    with pytest.raises(EnvelopeRejected) as info:
        parse_request(b'{"id": "x-1", "mode": "basic", "params": [], "bogus": 1}')
    exc = info.value
    assert exc.request_id == "x-1"
    assert exc.missing == ("operation",)
    assert any(item.startswith("params:") for item in exc.invalid)
    assert any(item.startswith("bogus:") for item in exc.invalid)
    assert exc.document == {"id": "x-1", "mode": "basic", "params": [], "bogus": 1}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": "", "mode": "basic", "operation": "X"}',
        b'{"id": 5, "mode": "basic", "operation": "X"}',
        b'{"mode": "basic", "operation": "X"}',
    ],
)
def test_unusable_ids_are_not_echoed(raw: bytes) -> None:
    with pytest.raises(EnvelopeRejected) as info:
        parse_request(raw)
    assert info.value.request_id is None


def test_unknown_mode_is_explained() -> None:
    with pytest.raises(EnvelopeRejected) as info:
        parse_request(b'{"id": "a", "mode": "fancy"}')
    assert "basic" in info.value.message and "advanced" in info.value.message
