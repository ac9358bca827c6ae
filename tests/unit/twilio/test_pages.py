"""Twilio's list pages (``bridge.twilio.pages``): reading one, and walking from one to the next."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.twilio.pages import (
    Page,
    PageFailed,
    Walk,
    gathered_body,
    next_page,
    page_of,
    sid_of,
    split_page,
    walk,
)

PATH = "/2010-04-01/Accounts/AC" + "0" * 32 + "/Messages.json"


def items(*sids: str) -> list[dict[str, Any]]:
    return [{"sid": sid} for sid in sids]


def page(*sids: str, next_uri: str | None = None, size: int = 10) -> Page:
    return Page("messages", items(*sids), next_uri, size)


class Server:
    """A ``Fetch`` over pages by URI; records which URIs it was asked for, with their number."""

    def __init__(self, pages: dict[str, Page | PageFailed]) -> None:
        self.pages = pages
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, uri: str, number: int) -> Page | PageFailed:
        self.asked.append((uri, number))
        return self.pages[uri]


def chain(count: int, *, size: int = 10) -> tuple[Page, Server]:
    """A list of ``count`` pages of two items each: the first page and the server of the rest."""
    pages = [
        page(f"SM{n}a", f"SM{n}b", next_uri=f"p{n + 1}" if n + 1 < count else None, size=size)
        for n in range(count)
    ]
    return pages[0], Server({f"p{n}": pages[n] for n in range(1, count)})


# --- one page ----------------------------------------------------------------------------------


def test_a_2010_page_and_a_v1_page() -> None:
    v2010 = {"messages": items("SM1"), "page": 0, "next_page_uri": PATH + "?Page=1"}
    v1 = {"services": items("IS1"), "meta": {"key": "services", "next_page_url": "https://x/2"}}
    assert split_page(v2010) == (
        "messages",
        items("SM1"),
        {"page": 0, "next_page_uri": PATH + "?Page=1"},
    )
    assert page_of(v2010, 42) == Page("messages", items("SM1"), PATH + "?Page=1", 42)
    assert page_of(v1, 7) == Page("services", items("IS1"), "https://x/2", 7)
    assert next_page({"messages": [], "next_page_uri": ""}) is None


@pytest.mark.parametrize(
    "body",
    [
        "text",
        None,
        [{"sid": "SM1"}],
        {"sid": "SM1"},
        {"messages": [], "media": []},
        {"messages": [1, 2]},
        {"messages": [], "status": "queued"},
    ],
    ids=["text", "none", "array", "resource", "two lists", "not objects", "not paging"],
)
def test_what_is_not_a_list_page(body: Any) -> None:
    assert page_of(body, 1) is None


def test_an_items_sid() -> None:
    assert [sid_of(item) for item in ({"sid": "SM1"}, {"sid": 1}, {"name": "x"})] == [
        "SM1",
        None,
        None,
    ]


# --- the walk ----------------------------------------------------------------------------------


async def test_a_walk_reads_every_page_to_the_end() -> None:
    first, server = chain(3)
    walked = await walk(first, server, max_pages=10)
    assert walked == Walk(items("SM0a", "SM0b", "SM1a", "SM1b", "SM2a", "SM2b"), 3, None)
    # Each page is asked for once, told which page of the walk it is.
    assert server.asked == [("p1", 2), ("p2", 3)]


async def test_a_walk_stops_at_max_pages_and_says_where_to_continue() -> None:
    first, server = chain(5)
    walked = await walk(first, server, max_pages=2)
    assert (walked.pages, walked.next_uri, len(walked.items)) == (2, "p2", 4)
    assert (walked.full, walked.failed) == (False, None)
    assert [uri for uri, _ in server.asked] == ["p1"]


async def test_one_page_is_all_a_max_of_one_reads() -> None:
    first, server = chain(2)
    walked = await walk(first, server, max_pages=1)
    assert (walked.pages, walked.next_uri, server.asked) == (1, "p1", [])


async def test_a_walk_stops_before_a_page_once_more_than_max_bytes_were_read() -> None:
    first, server = chain(5, size=100)
    # 100 + 100 bytes read is not more than 200: a third page is read, not a fourth.
    walked = await walk(first, server, max_pages=10, max_bytes=200)
    assert (walked.pages, walked.next_uri, walked.full, walked.failed) == (3, "p3", True, None)
    assert len(walked.items) == 6


async def test_max_bytes_stops_only_a_walk_with_more_to_read() -> None:
    first, server = chain(2, size=1000)
    walked = await walk(first, server, max_pages=10, max_bytes=10)
    assert (walked.pages, walked.next_uri, walked.full) == (1, "p1", True)
    last, _ = chain(1, size=1000)
    assert await walk(last, server, max_pages=10, max_bytes=10) == Walk(
        items("SM0a", "SM0b"), 1, None
    )


async def test_a_page_that_fails_ends_the_walk_with_what_was_gathered() -> None:
    first, server = chain(4)
    server.pages["p2"] = PageFailed("page 3 HTTP 500")
    walked = await walk(first, server, max_pages=10)
    assert walked == Walk(
        items("SM0a", "SM0b", "SM1a", "SM1b"), 2, "p2", failed=PageFailed("page 3 HTTP 500")
    )


async def test_without_an_identity_every_item_is_kept_and_empty_pages_do_not_stop() -> None:
    first = page("SM1", next_uri="p1")
    server = Server({"p1": page(next_uri="p2"), "p2": page("SM1", "SM2")})
    walked = await walk(first, server, max_pages=10)
    assert walked == Walk(items("SM1", "SM1", "SM2"), 3, None)


async def test_with_an_identity_items_are_kept_once_and_a_page_of_repeats_ends_the_walk() -> None:
    first = page("SM1", "SM2", next_uri="p1")
    server = Server({"p1": page("SM2", "SM3", next_uri="p2"), "p2": page("SM3", next_uri="p3")})
    walked = await walk(first, server, max_pages=10, identity=sid_of)
    assert walked == Walk(items("SM1", "SM2", "SM3"), 3, "p3")
    assert [uri for uri, _ in server.asked] == ["p1", "p2"]


async def test_an_identity_drops_items_without_one_and_keeps_the_first_pages_copy() -> None:
    first = Page(
        "messages",
        [{"sid": "SM1", "v": 1}, {"name": "no sid"}, {"sid": "SM1", "v": 2}],
        "p1",
        10,
    )
    server = Server({"p1": Page("messages", [{"sid": "SM1", "v": 3}, {"sid": "SM2"}], None, 10)})
    walked = await walk(first, server, max_pages=10, identity=sid_of)
    # Within a page its last copy, across pages the first page's: as Twilio's pages would be.
    assert walked.items == [{"sid": "SM1", "v": 2}, {"sid": "SM2"}]


async def test_an_empty_first_page_with_an_identity_is_the_whole_walk() -> None:
    server = Server({})
    walked = await walk(page(next_uri="p1"), server, max_pages=10, identity=sid_of)
    assert (walked.items, walked.pages, walked.next_uri, server.asked) == ([], 1, "p1", [])


# --- the gathered body -------------------------------------------------------------------------


def test_the_gathered_body_says_where_the_walk_stopped_in_the_pages_own_style() -> None:
    walked = Walk(items("SM1", "SM2"), 2, "p2")
    v2010: dict[str, Any] = {"messages": items("SM1"), "page": 0, "next_page_uri": "p1", "uri": "u"}
    assert gathered_body(v2010, "messages", walked) == {
        "messages": items("SM1", "SM2"),
        "page": 0,
        "next_page_uri": "p2",
        "uri": "u",
    }
    v1: dict[str, Any] = {
        "meta": {"key": "services", "next_page_url": "p1", "page": 0},
        "services": items("SM1"),
    }
    assert gathered_body(v1, "services", walked) == {
        "meta": {"key": "services", "next_page_url": "p2", "page": 0},
        "services": items("SM1", "SM2"),
    }
    # The first page's body is left as it was.
    assert v2010["messages"] == items("SM1") and v1["meta"]["next_page_url"] == "p1"


def test_a_2010_page_without_a_next_page_field_gets_one() -> None:
    walked = Walk(items("SM1"), 1, None)
    assert gathered_body({"messages": items("SM1")}, "messages", walked) == {
        "messages": items("SM1"),
        "next_page_uri": None,
    }
