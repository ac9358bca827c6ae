"""Twilio's list pages: which fields describe the page, where the items are, what comes next,
and the walk from one page to the next.

Pure: the walk does no I/O but through the ``fetch`` it is given. 2010 API lists carry
``next_page_uri`` (relative) and paging fields beside the items; v1/v2 lists carry
``meta.next_page_url`` (absolute) and the items under ``meta.key``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PAGING_FIELDS",
    "Fetch",
    "Page",
    "PageFailed",
    "Walk",
    "gathered_body",
    "next_page",
    "page_of",
    "sid_of",
    "split_page",
    "walk",
]

# Top-level fields of a 2010 list page that describe the page, not the items; ``meta`` holds
# the same for the v1/v2 product APIs.
PAGING_FIELDS = frozenset(
    {
        "page",
        "page_size",
        "num_pages",
        "total",
        "start",
        "end",
        "uri",
        "first_page_uri",
        "next_page_uri",
        "previous_page_uri",
        "last_page_uri",
        "meta",
    }
)


def split_page(body: Mapping[str, Any]) -> tuple[str, list[Any], dict[str, Any]] | None:
    """(items key, items, paging fields) when ``body`` is a list page, else ``None``."""
    lists = [key for key, value in body.items() if isinstance(value, list)]
    if len(lists) != 1:
        return None
    key = lists[0]
    items = body[key]
    if not all(isinstance(item, dict) for item in items):
        return None
    paging = {name: value for name, value in body.items() if name != key}
    if not PAGING_FIELDS.issuperset(paging):
        return None
    return key, items, paging


def next_page(body: Any) -> str | None:
    """The next page of a list answer: 2010 ``next_page_uri`` or v1/v2 ``meta.next_page_url``."""
    if not isinstance(body, dict):
        return None
    uri = body.get("next_page_uri")
    meta = body.get("meta")
    if uri is None and isinstance(meta, dict):
        uri = meta.get("next_page_url")
    return uri if isinstance(uri, str) and uri else None


@dataclass(frozen=True, slots=True)
class Page:
    """One list page as received: where its items are, the items, what comes next, its size."""

    key: str
    items: list[dict[str, Any]]
    next_uri: str | None
    size: int  # bytes, as the caller counts them against ``walk``'s ``max_bytes``


@dataclass(frozen=True, slots=True)
class PageFailed:
    """A page that could not be had, and why (in words for a warning)."""

    why: str


@dataclass(frozen=True, slots=True)
class Walk:
    """How a walk ended: the items gathered, the pages read, where to continue, why it stopped.

    ``next_uri`` is the first page not read (``None`` once the list was read to its end). The
    walk stopped there at ``max_pages``, at a page with nothing new, at ``max_bytes`` (then
    ``full``) or because that page could not be had (then ``failed`` says why).
    """

    items: list[dict[str, Any]]
    pages: int
    next_uri: str | None
    full: bool = False
    failed: PageFailed | None = None


# The page at a URI, told which page of the walk it is (the first is 1), or why not.
Fetch = Callable[[str, int], Awaitable[Page | PageFailed]]


def sid_of(item: Mapping[str, Any]) -> str | None:
    """An item's SID, Twilio's identity for a resource (a ``walk``'s ``identity``)."""
    sid = item.get("sid")
    return sid if isinstance(sid, str) else None


def page_of(body: Any, size: int) -> Page | None:
    """``body`` as a list page of ``size`` bytes, or ``None`` when it is not one."""
    page = split_page(body) if isinstance(body, dict) else None
    if page is None:
        return None
    key, items, _ = page
    return Page(key, items, next_page(body), size)


async def walk(
    first: Page,
    fetch: Fetch,
    *,
    max_pages: int,
    max_bytes: int | None = None,
    identity: Callable[[dict[str, Any]], str | None] | None = None,
) -> Walk:
    """Follow ``next_uri`` from ``first`` and gather the items of every page, within bounds.

    The walk reads at most ``max_pages`` pages (``first`` included); it stops before fetching
    another once more than ``max_bytes`` were read, and at a page ``fetch`` could not get.
    With ``identity``, an item is kept only when it has one, once (the copy of the first page
    it is on), and a page that adds nothing new ends the walk: the server is repeating itself.
    """
    items = _Items(identity)
    page, pages, size = first, 1, first.size
    fresh = items.add(first.items)
    while page.next_uri and pages < max_pages and fresh:
        if max_bytes is not None and size > max_bytes:
            return Walk(items.gathered(), pages, page.next_uri, full=True)
        fetched = await fetch(page.next_uri, pages + 1)
        if isinstance(fetched, PageFailed):
            return Walk(items.gathered(), pages, page.next_uri, failed=fetched)
        page, pages, size = fetched, pages + 1, size + fetched.size
        fresh = items.add(page.items)
    return Walk(items.gathered(), pages, page.next_uri)


def gathered_body(first: Mapping[str, Any], key: str, walked: Walk) -> dict[str, Any]:
    """The first page's body with every item walked under ``key`` and where the walk stopped.

    The next page is written in the page's own style: ``meta.next_page_url`` for v1/v2 lists,
    ``next_page_uri`` for 2010 ones.
    """
    meta = first.get("meta")
    paging: dict[str, Any] = (
        {"meta": {**meta, "next_page_url": walked.next_uri}}
        if isinstance(meta, dict)
        else {"next_page_uri": walked.next_uri}
    )
    return {**first, key: walked.items, **paging}


class _Items:
    """The items of a walk so far; with an identity, each once."""

    def __init__(self, identity: Callable[[dict[str, Any]], str | None] | None) -> None:
        self._identity = identity
        self._all: list[dict[str, Any]] = []
        self._by_identity: dict[str, dict[str, Any]] = {}

    def add(self, items: list[dict[str, Any]]) -> bool:
        """Take a page's items; whether any was new (always, without an identity)."""
        identity, known = self._identity, self._by_identity
        if identity is None:
            self._all += items
            return True
        # Within a page the last copy of an item wins; across pages the first page's.
        fresh = {
            key: item for item in items if (key := identity(item)) is not None and key not in known
        }
        known |= fresh
        return bool(fresh)

    def gathered(self) -> list[dict[str, Any]]:
        return self._all if self._identity is None else list(self._by_identity.values())
