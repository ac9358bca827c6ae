from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.twilio.encoding import encode_form, format_scalar, parse_form


def test_lists_are_repeated_keys_in_order() -> None:
    body = encode_form({"To": "+14155552671", "MediaUrl": ["https://a/1.png", "https://a/2.png"]})
    assert parse_qsl(body) == [
        ("To", "+14155552671"),
        ("MediaUrl", "https://a/1.png"),
        ("MediaUrl", "https://a/2.png"),
    ]
    assert "MediaUrl%5B%5D" not in body


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (12, "12"),
        (0.5, "0.5"),
        (1e-05, "0.00001"),
        (2.0, "2"),
        (1e20, "100000000000000000000"),
        ("a b", "a b"),
        # JSON as Twilio's Python SDK writes it (json.dumps): spaced, non-ASCII escaped.
        ({"k": [1, "x"], "é": None}, '{"k": [1, "x"], "\\u00e9": null}'),
    ],
)
def test_scalars(value: object, text: str) -> None:
    assert format_scalar(value) == text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object(), {"x": float("nan")}])
def test_unencodable_values_raise(value: object) -> None:
    with pytest.raises(ValueError):
        format_scalar(value)


def test_none_is_left_out_and_maps_flatten_only_when_asked() -> None:
    body = {"A": None, "B": [None, "x"], "AddOnsData": {"k": "v", "n": None}, "Obj": {"k": 1}}
    pairs = parse_qsl(encode_form(body, {"AddOnsData": "AddOns"}))
    assert pairs == [("B", "x"), ("AddOns.k", "v"), ("Obj", '{"k": 1}')]


def test_flattened_maps_flatten_at_every_depth_as_the_sdk_does() -> None:
    body = {
        "AddOnsData": {
            "payfone_tcpa_compliance": {"RightPartyContactedDate": "20160101", "n": None},
            "list": {"k": [1, 2]},
            "empty": {},
            "flag": True,
        }
    }
    assert parse_qsl(encode_form(body, {"AddOnsData": "AddOns"})) == [
        ("AddOns.payfone_tcpa_compliance.RightPartyContactedDate", "20160101"),
        ("AddOns.list.k", "1"),
        ("AddOns.list.k", "2"),
        ("AddOns.flag", "true"),
    ]


def test_special_characters_round_trip() -> None:
    body = {"Body": "Hé & = + ? 👍 %20", "To": "whatsapp:+1"}
    assert dict(parse_qsl(encode_form(body))) == body


@given(st.lists(st.tuples(st.text(), st.text()), max_size=5))
def test_the_encoding_is_exactly_urllibs(pairs: list[tuple[str, str]]) -> None:
    body = dict(pairs)
    try:
        expected = urlencode(list(body.items()))
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it either way
        with pytest.raises(UnicodeEncodeError):
            encode_form(body)
        return
    assert encode_form(body) == expected


def test_parse_form_is_strict() -> None:
    assert parse_form("From=%2B1&To=2&Empty=") == [("From", "+1"), ("To", "2"), ("Empty", "")]
    assert parse_form("") == []
    with pytest.raises(ValueError):
        parse_form("not form data")
