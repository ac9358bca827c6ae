"""Reply bodies in the format a request asks for: JSON as is, Twilio's 2010 XML, or CSV. Pure.

XML: root ``<TwilioResponse>``; object keys become PascalCase elements (``account_sid`` →
``AccountSid``); a list becomes an element holding one child per element, named by the singular
(``messages`` → ``Message``, ``countries`` → ``Country``, ``media_list`` → ``Media``; ``Item``
when no plural is recognised). A list page (one list of objects beside only paging fields) is
that list under the root, with the paging fields and ``meta``'s as attributes in lower case
without underscores (``first_page_uri`` → ``firstpageuri``; the first wins a clash). A single
resource is wrapped in an element named for it, as Twilio does (``<Message>`` for
``/Messages/SM….json``), when the path it came from is given. Name
characters other than ASCII letters and ``_`` (and, after the first, digits, ``.``, ``-``) are
written ``_xHHHH_`` as .NET's ``XmlConvert.EncodeName`` does (``2fa`` → ``_x0032_fa``, ``x:y``
→ ``X_x003A_y``); text characters XML forbids become U+FFFD.

CSV: one row per item of a list page or array (paging fields dropped), or one row for an object;
columns are the item fields in first-seen order. Nothing to write (no rows, or no fields) is
``b""``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, Literal

from bridge.twilio.pages import split_page

__all__ = [
    "ReplyFormat",
    "filter_nulls",
    "render",
    "resource_name",
    "to_csv",
    "to_xml",
]

ReplyFormat = Literal["json", "xml", "csv"]

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
ROOT = "TwilioResponse"

# Singulars the suffix rules in _singular get wrong.
_IRREGULAR_SINGULARS = {"media_list": "media"}
# What an item is called when its list's name has no recognisable plural.
_GENERIC_ITEM = "item"

# A Twilio SID: two capitals and 32 hex digits (``SM…``, ``AC…``).
_SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789.-")
# Everything XML 1.0 forbids in a document: most C0 controls, lone surrogates, U+FFFE/U+FFFF.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def filter_nulls(value: Any) -> Any:
    """A copy of ``value`` without ``None``-valued object fields, at any depth.

    ``None`` elements of lists stay: dropping them would shift the positions of the others.
    """
    if isinstance(value, dict):
        return {key: filter_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [filter_nulls(item) for item in value]
    return value


def resource_name(path: str) -> str | None:
    """The resource a Twilio path names, singular: ``Message`` for ``…/Messages/SM….json``.

    The last segment that starts with a capital and is not a SID; None when there is none.
    """
    for segment in reversed(path.split("?", 1)[0].split("/")):
        name = segment.removesuffix(".json")
        if name[:1].isupper() and name.isalnum() and not _SID.match(name):
            return _singular(name)
    return None


def to_xml(body: Any, resource: str | None = None) -> bytes:
    """``body`` as Twilio's 2010 API answers ``.xml`` URLs, as UTF-8 with an XML declaration.

    A single resource goes inside a ``resource`` element when given (see ``resource_name``).
    A scalar or null body (a 204's) gives an empty ``<TwilioResponse/>``.
    """
    out = [XML_DECLARATION]
    if isinstance(body, list):
        _write_list(out, ROOT, _GENERIC_ITEM, body, ())
    elif isinstance(body, dict):
        page = split_page(body)
        if page is None and resource:
            out.append(f"<{ROOT}>")
            _write_object(out, _xml_name(resource), body)
            out.append(f"</{ROOT}>")
        elif page is None:
            _write_object(out, ROOT, body)
        else:
            key, items, paging = page
            out.append(f"<{ROOT}>")
            _write_list(out, _tag(key), _item_key(key), items, _paging_attributes(paging))
            out.append(f"</{ROOT}>")
    else:
        out.append(f"<{ROOT}/>")
    return "".join(out).encode()


def to_csv(body: Any) -> bytes:
    """A list page, array or object as RFC 4180 CSV in UTF-8, ``\\r\\n`` line ends.

    Raises ``ValueError`` for a scalar body or for array items that are not objects.
    """
    rows = _csv_rows(body)
    columns: dict[str, None] = {}  # a dict keeps first-seen order, unlike a set
    for row in rows:
        columns.update(dict.fromkeys(row))
    if not columns:
        return b""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(_text(row.get(column)) for column in columns)
    # Lone surrogates (from JSON "\ud800" escapes) cannot be encoded as UTF-8.
    return _SURROGATE.sub("\ufffd", buffer.getvalue()).encode()


def render(
    body: Any, fmt: Literal["json", "xml", "csv"], resource: str | None = None
) -> tuple[Any, str]:
    """The reply body in ``fmt`` and its content type; XML and CSV travel as strings."""
    if fmt == "json":
        return body, "application/json"
    if fmt == "xml":
        return to_xml(body, resource).decode(), "application/xml"
    if fmt == "csv":
        return to_csv(body).decode(), "text/csv"
    # Literal is not enforced at run time, and an envelope may come from anywhere.
    raise ValueError(f"unknown reply format {fmt!r}: expected json, xml or csv")


def _paging_attributes(paging: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Container attributes from the page's paging fields, then from the fields of ``meta``."""
    fields: list[tuple[str, Any]] = []
    for name, value in paging.items():
        if name == "meta" and isinstance(value, dict):
            fields.extend(value.items())
        else:
            fields.append((name, value))
    attributes: dict[str, str] = {}
    for name, value in fields:
        attributes.setdefault(_attribute(name), _text(value))
    return tuple(attributes.items())


def _write_value(out: list[str], key: str, value: Any) -> None:
    """One field as an element named after ``key``."""
    tag = _tag(key)
    if isinstance(value, dict):
        _write_object(out, tag, value)
    elif isinstance(value, list):
        _write_list(out, tag, _item_key(key), value, ())
    elif value is None or value == "":
        out.append(f"<{tag}/>")
    else:
        out.append(f"<{tag}>{_escape_text(_text(value))}</{tag}>")


def _write_object(out: list[str], tag: str, value: Mapping[str, Any]) -> None:
    if not value:
        out.append(f"<{tag}/>")
        return
    out.append(f"<{tag}>")
    for key, item in value.items():
        _write_value(out, key, item)
    out.append(f"</{tag}>")


def _write_list(
    out: list[str],
    tag: str,
    item_key: str,
    items: list[Any],
    attributes: tuple[tuple[str, str], ...],
) -> None:
    """A container element holding one ``item_key`` element per item."""
    attrs = "".join(f' {name}="{_escape_attribute(value)}"' for name, value in attributes)
    if not items:
        out.append(f"<{tag}{attrs}/>")
        return
    out.append(f"<{tag}{attrs}>")
    for item in items:
        _write_value(out, item_key, item)
    out.append(f"</{tag}>")


def _tag(key: str) -> str:
    """Element name: each ``_``-separated part's first letter raised (``friendlyName`` too)."""
    return _xml_name("".join(part[:1].upper() + part[1:] for part in key.split("_")))


def _attribute(key: str) -> str:
    """Attribute name as Twilio's 2010 paging attributes: lower case, no underscores."""
    return _xml_name(key.replace("_", "").lower())


def _xml_name(name: str) -> str:
    """``name`` with each character not allowed where it stands written ``_xHHHH_``.

    ``:`` too: it would read as an undeclared namespace prefix. An empty name becomes ``_``.
    """
    escaped = [
        char if char in (_NAME_CHARS if index else _NAME_START) else _escape_name_char(char)
        for index, char in enumerate(name)
    ]
    return "".join(escaped) or "_"


def _escape_name_char(char: str) -> str:
    code = ord(char)
    return f"_x{code:04X}_" if code <= 0xFFFF else f"_x{code:08X}_"


def _item_key(key: str) -> str:
    """The key each item of the list under ``key`` is written with."""
    singular = _singular(key)
    return singular if singular != key else _GENERIC_ITEM


def _singular(key: str) -> str:
    """English singular of a snake_case plural; unchanged when unsure (``status``, ``data``)."""
    if key in _IRREGULAR_SINGULARS:
        return _IRREGULAR_SINGULARS[key]
    if key.endswith("ies") and len(key) > 3:
        return key[:-3] + "y"
    if key.endswith("sses"):
        return key[:-2]
    if key.endswith(("ss", "us", "is")) or not key.endswith("s") or len(key) < 2:
        return key
    return key[:-1]


def _text(value: Any) -> str:
    """A JSON value as cell, attribute or element text; objects and lists as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _decimal(value)
    if isinstance(value, dict | list):
        # The stdlib, not orjson: it takes integers beyond 64 bits, and NaN if one got parsed.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    raise ValueError(f"cannot render a {type(value).__name__}: not a JSON value")


def _decimal(value: float) -> str:
    if not math.isfinite(value):
        # Python's json module parses these spellings; echo them back the same way.
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    # str() would give '1e-05'; plain decimals read the same in every consumer.
    text = format(Decimal(repr(value)), "f")
    return text[:-2] if text.endswith(".0") else text


def _escape_text(text: str) -> str:
    """Element content: characters XML forbids become U+FFFD; ``\\r`` survives as ``&#13;``."""
    text = _NOT_XML_CHAR.sub("\ufffd", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # A parser would normalise a literal CR to LF.
    return text.replace("\r", "&#13;")


def _escape_attribute(text: str) -> str:
    """Attribute value in double quotes; whitespace escaped so parsers do not normalise it."""
    text = _escape_text(text).replace('"', "&quot;")
    return text.replace("\n", "&#10;").replace("\t", "&#9;")


def _csv_rows(body: Any) -> list[Mapping[str, Any]]:
    """The objects that become CSV rows."""
    if isinstance(body, dict):
        page = split_page(body)
        return [body] if page is None else page[1]
    if isinstance(body, list):
        return list(_objects(body))
    raise ValueError(
        f"a {type(body).__name__} body cannot be CSV: expected an object, a list page or an array"
    )


def _objects(items: list[Any]) -> Iterator[Mapping[str, Any]]:
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(
                f"item {index} is a {type(item).__name__}, not an object: CSV needs objects"
            )
        yield item
