"""Reply formats: null filtering, Twilio-style XML, CSV, ``render``."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.outbound.formats import (
    filter_nulls,
    render,
    resource_name,
    to_csv,
    to_xml,
)
from bridge.twilio.pages import PAGING_FIELDS
from tests.helpers import ACCOUNT

DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'
# No example database: the suite must not leave files in the checkout.
# What XML 1.0 cannot carry, as the module replaces it.
NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
PROPERTY = settings(database=None, max_examples=200, deadline=None)


def message(sid: str, body: str = "testing", **extra: Any) -> dict[str, Any]:
    """A 2010 Message as the API's JSON (shape of the spec's examples)."""
    uri = f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}"
    return {
        "account_sid": ACCOUNT,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": "Fri, 24 May 2019 17:44:46 +0000",
        "date_sent": None,
        "direction": "outbound-api",
        "error_code": None,
        "from": "+12019235161",
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
        "uri": f"{uri}.json",
        **extra,
    }


def message_page(*messages: dict[str, Any]) -> dict[str, Any]:
    base = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    return {
        "end": len(messages) - 1,
        "first_page_uri": f"{base}?To=%2B123456789&PageSize=2&Page=0",
        "next_page_uri": f"{base}?To=%2B123456789&PageSize=2&Page=1&PageToken=PAMM",
        "page": 0,
        "page_size": 2,
        "previous_page_uri": None,
        "messages": list(messages),
        "start": 0,
        "uri": f"{base}?To=%2B123456789&PageSize=2&Page=0",
    }


SERVICES_PAGE: dict[str, Any] = {
    "meta": {
        "page": 0,
        "page_size": 50,
        "first_page_url": "https://messaging.twilio.com/v1/Services?PageSize=50&Page=0",
        "previous_page_url": None,
        "next_page_url": None,
        "key": "services",
        "url": "https://messaging.twilio.com/v1/Services?PageSize=50&Page=0",
    },
    "services": [
        {
            "sid": "MGaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "friendly_name": "My Service!",
            "sticky_sender": True,
            "validity_period": 14400,
            "links": {"phone_numbers": "https://messaging.twilio.com/v1/Services/MG/PhoneNumbers"},
        }
    ],
}


def parse_xml(data: bytes) -> ET.Element:
    assert data.startswith(DECLARATION)
    return ET.fromstring(data)


def parse_csv(data: bytes) -> list[list[str]]:
    text = data.decode("utf-8")
    assert text.endswith("\r\n")
    return list(csv.reader(io.StringIO(text, newline="")))


def child_tags(element: ET.Element) -> list[str]:
    return [child.tag for child in element]


# filter_nulls


def test_filter_nulls_removes_null_fields_at_every_depth() -> None:
    body = message_page(message("SM1"), message("SM2", error_code=30007))
    filtered = filter_nulls(body)
    assert "previous_page_uri" not in filtered
    first, second = filtered["messages"]
    assert "date_sent" not in first and "error_code" not in first and "price" not in first
    assert second["error_code"] == 30007
    assert first["subresource_uris"] == body["messages"][0]["subresource_uris"]


def test_filter_nulls_keeps_null_list_elements_and_copies() -> None:
    body: dict[str, Any] = {"a": [None, {"b": None, "c": [None, {"d": None}]}], "e": None, "f": {}}
    original = copy.deepcopy(body)
    assert filter_nulls(body) == {"a": [None, {"c": [None, {}]}], "f": {}}
    assert body == original
    filtered = filter_nulls(body)
    filtered["a"][1]["c"].append(1)
    assert body == original


@pytest.mark.parametrize("value", [None, 0, 1.5, "", "x", True, [], [None]])
def test_filter_nulls_returns_non_objects_as_they_are(value: Any) -> None:
    assert filter_nulls(value) == value


# to_xml: shapes


def test_single_message_becomes_pascal_case_elements() -> None:
    root = parse_xml(to_xml(message("SM1", body="hi")))
    assert root.tag == "TwilioResponse"
    assert child_tags(root)[:4] == ["AccountSid", "ApiVersion", "Body", "DateCreated"]
    assert root.findtext("Sid") == "SM1"
    assert root.findtext("Body") == "hi"
    assert root.findtext("Uri") == f"/2010-04-01/Accounts/{ACCOUNT}/Messages/SM1.json"
    assert root.findtext("From") == "+12019235161"
    assert root.findtext("NumMedia") == "0"
    # None is an empty element, not a missing one.
    date_sent = root.find("DateSent")
    assert date_sent is not None and date_sent.text is None and len(date_sent) == 0
    uris = root.find("SubresourceUris")
    assert uris is not None
    assert child_tags(uris) == ["Media", "Feedback"]
    assert uris.findtext("Media", "").endswith("/Messages/SM1/Media.json")


def test_single_resource_is_wrapped_in_its_element_when_named() -> None:
    root = parse_xml(to_xml(message("SM1", body="hi"), "Message"))
    assert child_tags(root) == ["Message"]
    assert root[0].findtext("Sid") == "SM1"
    # A list page keeps its own list element whatever resource is named.
    page = parse_xml(to_xml(message_page(message("SM1")), "Message"))
    assert child_tags(page) == ["Messages"]


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json", "Message"),
        (f"/2010-04-01/Accounts/{ACCOUNT}/Messages/SM{'0' * 32}.json", "Message"),
        (f"/2010-04-01/Accounts/{ACCOUNT}.json", "Account"),
        (
            f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json?Beta=true",
            "IncomingPhoneNumber",
        ),
        (
            f"/2010-04-01/Accounts/{ACCOUNT}/Calls/CA{'1' * 32}/Recordings/RE{'2' * 32}.json",
            "Recording",
        ),
        ("/v2/PhoneNumbers/+14155552671", "PhoneNumber"),
        (f"/v2/Services/VA{'3' * 32}/Verifications", "Verification"),
        (f"/v2/Services/VA{'3' * 32}/VerificationCheck", "VerificationCheck"),
        ("/v1/Countries", "Country"),
        ("/", None),
        ("/2010-04-01/x.json", None),
    ],
)
def test_resource_name_is_the_last_named_segment_in_the_singular(
    path: str, name: str | None
) -> None:
    assert resource_name(path) == name


def test_message_page_has_paging_attributes_and_one_element_per_item() -> None:
    body = message_page(message("SM1"), message("SM2", body="look mom"))
    root = parse_xml(to_xml(body))
    assert child_tags(root) == ["Messages"]
    messages = root[0]
    assert child_tags(messages) == ["Message", "Message"]
    assert messages[1].findtext("Body") == "look mom"
    assert messages.attrib == {
        "end": "1",
        "firstpageuri": body["first_page_uri"],
        "nextpageuri": body["next_page_uri"],
        "page": "0",
        "pagesize": "2",
        "previouspageuri": "",
        "start": "0",
        "uri": body["uri"],
    }
    assert messages[0].find("SubresourceUris/Feedback") is not None


def test_v1_page_takes_its_attributes_from_meta() -> None:
    root = parse_xml(to_xml(SERVICES_PAGE))
    services = root[0]
    assert services.tag == "Services"
    assert services.attrib == {
        "page": "0",
        "pagesize": "50",
        "firstpageurl": SERVICES_PAGE["meta"]["first_page_url"],
        "previouspageurl": "",
        "nextpageurl": "",
        "key": "services",
        "url": SERVICES_PAGE["meta"]["url"],
    }
    (service,) = services
    assert service.tag == "Service"
    assert service.findtext("FriendlyName") == "My Service!"
    assert service.findtext("StickySender") == "true"
    assert service.findtext("ValidityPeriod") == "14400"
    assert service.findtext("Links/PhoneNumbers", "").endswith("/PhoneNumbers")


def test_paging_attribute_clash_keeps_the_first() -> None:
    body = {"page": 3, "meta": {"page": 9, "page_size": 5, "pagesize": 6}, "calls": []}
    calls = parse_xml(to_xml(body))[0]
    assert calls.attrib == {"page": "3", "pagesize": "5"}


@pytest.mark.parametrize(
    ("key", "container", "item"),
    [
        ("messages", "Messages", "Message"),
        ("recordings", "Recordings", "Recording"),
        ("media_list", "MediaList", "Media"),
        ("countries", "Countries", "Country"),
        ("ip_addresses", "IpAddresses", "IpAddress"),
        ("available_phone_numbers", "AvailablePhoneNumbers", "AvailablePhoneNumber"),
        ("usage_records", "UsageRecords", "UsageRecord"),
        ("data", "Data", "Item"),
        ("status", "Status", "Item"),
    ],
)
def test_list_items_are_named_by_the_singular(key: str, container: str, item: str) -> None:
    root = parse_xml(to_xml({key: [{"sid": "XX1"}, {"sid": "XX2"}], "page": 0}))
    assert child_tags(root) == [container]
    assert child_tags(root[0]) == [item, item]


def test_list_field_of_a_resource_is_a_container_of_repeated_elements() -> None:
    sms = message("SM1", flags=["outbound", "inbound"], tags={"campaign": "spring"})
    root = parse_xml(to_xml(sms))
    flags = root.find("Flags")
    assert flags is not None
    assert [(flag.tag, flag.text) for flag in flags] == [("Flag", "outbound"), ("Flag", "inbound")]
    assert root.findtext("Tags/Campaign") == "spring"
    # A resource with one list field is not a page: its other fields stay elements.
    assert root.findtext("Sid") == "SM1"


def test_scalars_are_written_as_twilio_writes_them() -> None:
    body = {"yes": True, "no": False, "count": 12, "price": -0.0075, "tiny": 1e-05, "big": 1e21}
    root = parse_xml(to_xml(body))
    assert [(child.tag, child.text) for child in root] == [
        ("Yes", "true"),
        ("No", "false"),
        ("Count", "12"),
        ("Price", "-0.0075"),
        ("Tiny", "0.00001"),
        ("Big", "1000000000000000000000"),
    ]


@pytest.mark.parametrize("body", [None, "", "text", 0, 1.5, True])
def test_scalar_or_empty_body_is_an_empty_root(body: Any) -> None:
    assert to_xml(body) == DECLARATION + b"<TwilioResponse/>"


def test_empty_page_and_empty_containers() -> None:
    root = parse_xml(to_xml({"messages": [], "page": 0, "page_size": 50}))
    assert child_tags(root) == ["Messages"]
    assert len(root[0]) == 0 and root[0].attrib == {"page": "0", "pagesize": "50"}
    root = parse_xml(to_xml({"subresource_uris": {}, "flags": [], "sid": "SM1"}))
    assert [len(child) for child in root] == [0, 0, 0]


def test_bare_array_items_are_named_item() -> None:
    root = parse_xml(to_xml([{"sid": "SM1"}, "two", [3]]))
    assert child_tags(root) == ["Item", "Item", "Item"]
    assert root[0].findtext("Sid") == "SM1"
    assert root[1].text == "two"
    assert root[2].findtext("Item") == "3"


# to_xml: escaping and names


def test_special_characters_and_unicode_round_trip() -> None:
    text = "Tom & Jerry <b>\"quoted\" 'single'</b> ✓ 日本語 😀 line\r\nbreak\ttab"
    data = to_xml(message("SM1", body=text))
    assert "✓ 日本語 😀".encode() in data
    root = parse_xml(data)
    assert root.findtext("Body") == text


def test_special_characters_in_attributes_round_trip() -> None:
    uri = "/x?a=1&b=<2>&c=\"3\"&d='4'\n\t\r"
    calls = parse_xml(to_xml({"calls": [], "uri": uri}))[0]
    assert calls.attrib == {"uri": uri}


def test_characters_xml_forbids_become_replacement_characters() -> None:
    root = parse_xml(to_xml({"body": "a\x00b\x1fc\ufffed\ud800e", "uri": "x\x07"}))
    assert root.findtext("Body") == "a\ufffdb\ufffdc\ufffdd\ufffde"
    assert root.findtext("Uri") == "x\ufffd"


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        ("account_sid", "AccountSid"),
        ("date_created", "DateCreated"),
        ("uri", "Uri"),
        ("subresource_uris", "SubresourceUris"),
        ("friendlyName", "FriendlyName"),
        ("address_2", "Address2"),
        ("2fa_enabled", "_x0032_faEnabled"),
        ("friendly name", "Friendly_x0020_name"),
        ("x:y", "X_x003A_y"),
        ("a.b-c", "A.b-c"),
        ("-x", "_x002D_x"),
        ("ñandú", "_x00D1_and_x00FA_"),
        ("😀", "_x0001F600_"),
        ("", "_"),
        ("_", "_"),
        ("__private", "Private"),
        ("<&>", "_x003C__x0026__x003E_"),
    ],
)
def test_keys_become_valid_element_names(key: str, tag: str) -> None:
    root = parse_xml(to_xml({key: "v"}))
    assert [(child.tag, child.text) for child in root] == [(tag, "v")]


def test_meta_keys_that_are_not_names_are_escaped_too() -> None:
    body = {"meta": {"page size": 5, "9": "nine"}, "items": []}
    items = parse_xml(to_xml(body))[0]
    assert items.attrib == {"page_x0020_size": "5", "_x0039_": "nine"}


# to_csv


def test_message_page_as_csv() -> None:
    body = message_page(
        message("SM1", body="hello, world"), message("SM2", body='say "hi"\r\nbye', tag="x")
    )
    header, first, second = parse_csv(to_csv(body))
    assert header == [*message("SM1"), "tag"]
    row1 = dict(zip(header, first, strict=True))
    row2 = dict(zip(header, second, strict=True))
    assert row1["body"] == "hello, world"
    assert row2["body"] == 'say "hi"\r\nbye'
    assert row1["date_sent"] == "" and row1["tag"] == "" and row2["tag"] == "x"
    assert json.loads(row1["subresource_uris"]) == body["messages"][0]["subresource_uris"]
    # Compact JSON: no spaces after separators.
    assert row1["subresource_uris"].startswith('{"media":"/2010-04-01/')


def test_csv_union_of_fields_in_first_seen_order() -> None:
    rows = parse_csv(to_csv([{"a": 1, "b": True}, {"c": None, "a": 2.5}, {"b": False, "d": [1]}]))
    assert rows == [
        ["a", "b", "c", "d"],
        ["1", "true", "", ""],
        ["2.5", "", "", ""],
        ["", "false", "", "[1]"],
    ]


def test_csv_raw_bytes_use_crlf_and_rfc_4180_quoting() -> None:
    data = to_csv([{"sid": "SM1", "body": 'a,"b"\nc'}])
    assert data == b'sid,body\r\nSM1,"a,""b""\nc"\r\n'


def test_v1_page_as_csv_drops_meta() -> None:
    header, row = parse_csv(to_csv(SERVICES_PAGE))
    assert header == ["sid", "friendly_name", "sticky_sender", "validity_period", "links"]
    assert row[:4] == ["MGaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "My Service!", "true", "14400"]


def test_single_object_is_one_header_and_one_row() -> None:
    sms = message("SM1", body="héllo ✓ <&>", flags=["outbound"])
    header, row = parse_csv(to_csv(sms))
    assert header == list(sms)
    values = dict(zip(header, row, strict=True))
    assert values["body"] == "héllo ✓ <&>"
    assert values["flags"] == '["outbound"]'
    assert values["price"] == ""


@pytest.mark.parametrize(
    "body", [[], {"messages": [], "page": 0}, {"meta": {}, "services": []}, {}]
)
def test_nothing_to_write_is_an_empty_body(body: Any) -> None:
    assert to_csv(body) == b""


@pytest.mark.parametrize("body", [None, "text", 3, 1.5, True])
def test_csv_of_a_scalar_is_an_error(body: Any) -> None:
    with pytest.raises(ValueError, match="cannot be CSV"):
        to_csv(body)


def test_csv_of_an_array_of_non_objects_is_an_error() -> None:
    with pytest.raises(ValueError, match="item 1 is a str, not an object"):
        to_csv([{"a": 1}, "b"])


def test_csv_of_unicode_is_utf8_with_surrogates_replaced() -> None:
    data = to_csv([{"name": "日本語 😀", "odd": "\ud800"}])
    assert data == "name,odd\r\n日本語 😀,\ufffd\r\n".encode()


# render


def test_render_json_returns_the_body_itself() -> None:
    body = message("SM1")
    reply, content_type = render(body, "json")
    assert reply is body and content_type == "application/json"


def test_render_xml_and_csv_return_text() -> None:
    body = message_page(message("SM1"))
    xml_reply, xml_type = render(body, "xml")
    assert xml_type == "application/xml" and xml_reply == to_xml(body).decode()
    csv_reply, csv_type = render(body, "csv")
    assert csv_type == "text/csv" and csv_reply == to_csv(body).decode()


def test_render_of_no_content() -> None:
    assert render(None, "json") == (None, "application/json")
    assert render(None, "xml") == (DECLARATION.decode() + "<TwilioResponse/>", "application/xml")
    with pytest.raises(ValueError):
        render(None, "csv")


def test_render_rejects_an_unknown_format() -> None:
    fmt: Any = "yaml"
    with pytest.raises(ValueError, match="unknown reply format 'yaml'"):
        render({}, fmt)


def test_paging_fields_cover_2010_and_product_pages() -> None:
    assert {"first_page_uri", "next_page_uri", "page_size", "meta"} <= PAGING_FIELDS


# properties

# Any code point, and often the awkward ones: lone surrogates (json.loads turns "\ud800" into
# one), characters XML forbids, markup, line ends.
any_char = st.characters(exclude_categories=()) | st.sampled_from(
    "\ud800\udfff\x00\x1f\ufffe\r\n\t&<>\"':"
)
# Joined by hand: st.text() would merge the alphabets and drop the surrogates again.
any_text = st.lists(any_char, max_size=12).map("".join)
any_key = st.lists(any_char, max_size=8).map("".join)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_key, children, max_size=4)
    ),
    max_leaves=25,
)
# Page-like objects, so the attribute path sees arbitrary values too.
pages = st.fixed_dictionaries(
    {"items": st.lists(st.dictionaries(any_key, json_values, max_size=4), max_size=3)},
    optional={
        "page": json_values,
        "uri": json_values,
        "meta": st.dictionaries(any_key, json_values, max_size=4),
    },
)


def has_null_field(value: Any) -> bool:
    if isinstance(value, dict):
        return any(item is None or has_null_field(item) for item in value.values())
    if isinstance(value, list):
        return any(has_null_field(item) for item in value)
    return False


@PROPERTY
@given(json_values | pages)
def test_to_xml_is_always_well_formed(body: Any) -> None:
    root = parse_xml(to_xml(body))
    assert root.tag == "TwilioResponse"


@PROPERTY
@given(st.dictionaries(any_key, any_text, max_size=6))
def test_to_xml_keeps_text_of_flat_objects(body: dict[str, str]) -> None:
    root = parse_xml(to_xml(body))
    expected = [NOT_XML_CHAR.sub("\ufffd", text) for text in body.values()]
    assert [child.text or "" for child in root] == expected


@PROPERTY
@given(json_values)
def test_filter_nulls_leaves_no_null_field(value: Any) -> None:
    filtered = filter_nulls(value)
    assert not has_null_field(filtered)
    assert filter_nulls(filtered) == filtered


@PROPERTY
@given(st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), max_size=5))
def test_to_csv_has_one_row_per_item(items: list[dict[str, Any]]) -> None:
    data = to_csv(items)
    columns = list(dict.fromkeys(key for item in items for key in item))
    if not columns:
        assert data == b""
        return
    rows = parse_csv(data)
    assert rows[0] == columns
    assert len(rows) == len(items) + 1
    assert all(len(row) == len(columns) for row in rows)
