import pytest

from bridge.twilio.headers import FORBIDDEN_REQUEST_HEADERS, select_headers, selection

HEADERS = [("X-A", "1"), ("x-b", "2"), ("Authorization", "Basic x"), ("X-A", "3")]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, {}),
        ([], {}),
        ("X-A", {"x-a": "1, 3"}),
        ("x-a|X-B", {"x-a": "1, 3", "x-b": "2"}),
        (["x-b"], {"x-b": "2"}),
        ("*", {"x-a": "1, 3", "x-b": "2"}),
    ],
)
def test_selection_forms(spec: list[str] | str | None, expected: dict[str, str]) -> None:
    assert select_headers(HEADERS, spec, FORBIDDEN_REQUEST_HEADERS) == expected


def test_forbidden_headers_are_never_forwarded_even_when_named() -> None:
    assert select_headers(HEADERS, "Authorization|Host", FORBIDDEN_REQUEST_HEADERS) == {}


def test_selection_normalises() -> None:
    assert selection(" A | b ") == frozenset({"a", "b"})
    assert selection("*|a") is None
