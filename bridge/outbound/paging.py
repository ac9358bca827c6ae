"""``follow_pages``: a list reply gathered from every page Twilio has for it, within bounds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from bridge.contract.envelopes import Reply
from bridge.contract.errors import BridgeError
from bridge.outbound.sender import Sent, why
from bridge.twilio.calls import TwilioCall
from bridge.twilio.pages import (
    Page,
    PageFailed,
    Walk,
    gathered_body,
    page_of,
    split_page,
    walk,
)
from bridge.twilio.responses import parse_body

__all__ = ["DEFAULT_MAX_PAGES", "NOT_A_LIST", "follow_pages"]

DEFAULT_MAX_PAGES = 10
NOT_A_LIST = "follow_pages ignored: the answer is not a list page"


async def follow_pages(
    first: Reply,
    call_for: Callable[[str], TwilioCall],
    send: Callable[[TwilioCall], Awaitable[Sent]],
    *,
    max_pages: int,
    max_bytes: int,
) -> Reply:
    """``first`` with the items of the pages after it, as one reply.

    ``call_for`` builds the call for a next page's URI (raising ``BridgeError``), ``send``
    sends it. The walk stops at ``max_pages``, before the items outgrow ``max_bytes``, or at a
    page that fails; the reply's ``next_page_uri`` then says where to continue, a warning why.
    """
    body = first.body
    split = split_page(body) if isinstance(body, dict) else None
    if split is None:
        return first.model_copy(update={"warnings": [*first.warnings, NOT_A_LIST]})
    # Sized only once known to be a list page: another body may be too deep to serialise.
    page = Page(split[0], split[1], first.next_page_uri, len(orjson.dumps(body)))
    fetch = _Fetch(call_for, send, first.attempts, first.wait_ms, list(first.warnings))
    walked = await walk(page, fetch, max_pages=max_pages, max_bytes=max_bytes)
    return first.model_copy(
        update={
            "body": gathered_body(body, page.key, walked),
            "pages": walked.pages,
            "attempts": fetch.attempts,
            "wait_ms": round(fetch.wait_ms, 3),
            "next_page_uri": walked.next_uri,
            "warnings": [*fetch.warnings, *_stopped(walked)],
        }
    )


@dataclass(slots=True)
class _Fetch:
    """Fetches the next pages, counting what their sending costs into the reply's totals."""

    call_for: Callable[[str], TwilioCall]
    send: Callable[[TwilioCall], Awaitable[Sent]]
    attempts: int
    wait_ms: float
    warnings: list[str] = field(default_factory=list)

    async def __call__(self, uri: str, number: int) -> Page | PageFailed:
        try:
            call = self.call_for(uri)
        except BridgeError as exc:
            return PageFailed(exc.message)
        sent = await self.send(call)
        self.attempts += sent.attempts
        self.wait_ms += sent.wait_ms
        self.warnings += sent.retried
        result, page = sent.result, None
        if result is not None and result.status < 400:
            page = page_of(parse_body(result), len(result.content))
        return page if page is not None else PageFailed(f"page {number} {why(sent.attempt)}")


def _stopped(walked: Walk) -> list[str]:
    """Why the walk stopped with more to read, when it was not ``max_pages``."""
    if walked.full:
        return [f"stopped after {walked.pages} pages: the reply would outgrow Kafka"]
    if walked.failed is not None:
        return [f"stopped after {walked.pages} pages: {walked.failed.why}"]
    return []
