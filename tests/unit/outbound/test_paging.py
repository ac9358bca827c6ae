"""``follow_pages`` (``bridge.outbound.paging``): one reply from every page, with fakes for the
building and the sending of each next page's call."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from bridge.contract.envelopes import Reply
from bridge.contract.errors import CallTimeout, RequestInvalid
from bridge.outbound.paging import NOT_A_LIST, follow_pages
from bridge.outbound.replies import reply_for_response
from bridge.outbound.sender import Sent
from bridge.twilio.calls import TwilioCall
from bridge.twilio.retry import Attempt
from tests.helpers import CALL, result

LIST = CALL.path


def body(number: int, next_uri: str | None, *, meta: bool = False) -> dict[str, Any]:
    """Page ``number`` of two messages, in the 2010 style or the v1/v2 one (``meta``)."""
    messages = [{"sid": f"SM{number}{i}"} for i in range(2)]
    if meta:
        return {"messages": messages, "meta": {"key": "messages", "next_page_url": next_uri}}
    return {"messages": messages, "page": number, "next_page_uri": next_uri}


def ok(page: dict[str, Any], *, attempts: int = 1, wait_ms: float = 0.0, **kw: Any) -> Sent:
    return Sent(result(200, page), Attempt(status=200), attempts, wait_ms=wait_ms, **kw)


def first_reply(page: dict[str, Any]) -> Reply:
    return reply_for_response(
        "req-list",
        replace(CALL, warnings=("w0",)),
        result(200, page),
        response_headers=None,
        metadata=None,
        attempts=2,
        duration_ms=5,
        wait_ms=1.25,
    )


class Twilio:
    """The calls built and sent for next pages: each URI answered by its ``Sent``."""

    def __init__(self, pages: dict[str, Sent]) -> None:
        self.pages = pages
        self.sent: list[str] = []

    def call_for(self, uri: str) -> TwilioCall:
        if uri.startswith("https://evil"):
            raise RequestInvalid("next_page_uri must be relative or on a twilio.com host")
        return replace(CALL, method="GET", path=uri)

    async def send(self, call: TwilioCall) -> Sent:
        self.sent.append(call.path)
        return self.pages[call.path]


def chain(count: int) -> tuple[Reply, Twilio]:
    """The first reply of a list of ``count`` pages, and the Twilio answering the others."""
    uris = [f"{LIST}?Page={n}" for n in range(count)]

    def after(n: int) -> str | None:
        return uris[n + 1] if n + 1 < count else None

    pages = {uris[n]: ok(body(n, after(n))) for n in range(1, count)}
    return first_reply(body(0, after(0))), Twilio(pages)


async def follow(
    first: Reply, twilio: Twilio, *, max_pages: int = 10, max_bytes: int = 1 << 20
) -> Reply:
    return await follow_pages(
        first, twilio.call_for, twilio.send, max_pages=max_pages, max_bytes=max_bytes
    )


async def test_every_page_in_one_reply_with_the_totals_of_all_sends() -> None:
    first, twilio = chain(3)
    twilio.pages[f"{LIST}?Page=2"] = ok(
        body(2, None), attempts=2, wait_ms=0.5, retried=("attempt 1: HTTP 429",)
    )
    reply = await follow(first, twilio)
    sids = [m["sid"] for m in reply.body["messages"]]
    assert sids == [f"SM{page}{i}" for page in range(3) for i in range(2)]
    assert (reply.pages, reply.next_page_uri) == (3, None)
    assert reply.body["next_page_uri"] is None
    assert (reply.attempts, reply.wait_ms) == (2 + 1 + 2, 1.75)
    assert reply.warnings == ["w0", "attempt 1: HTTP 429"]
    assert reply.body["page"] == 0  # the first page's own paging fields, but for the next page
    assert twilio.sent == [f"{LIST}?Page=1", f"{LIST}?Page=2"]


async def test_max_pages_says_where_to_continue_without_a_warning() -> None:
    first, twilio = chain(5)
    reply = await follow(first, twilio, max_pages=2)
    assert (reply.pages, reply.next_page_uri) == (2, f"{LIST}?Page=2")
    assert reply.body["next_page_uri"] == f"{LIST}?Page=2"
    assert reply.warnings == ["w0"]


async def test_the_byte_budget_stops_the_walk_with_a_warning() -> None:
    first, twilio = chain(5)
    first_size = len(orjson.dumps(first.body))
    reply = await follow(first, twilio, max_bytes=first_size)
    assert (reply.pages, reply.next_page_uri) == (2, f"{LIST}?Page=2")
    assert reply.warnings == ["w0", "stopped after 2 pages: the reply would outgrow Kafka"]


async def test_a_failing_page_keeps_what_was_gathered_and_says_which_and_why() -> None:
    first, twilio = chain(4)
    failing = Attempt(status=500, twilio_code=20500)
    twilio.pages[f"{LIST}?Page=2"] = Sent(
        result(500, {"code": 20500}), failing, 2, retried=("attempt 1: HTTP 500",)
    )
    reply = await follow(first, twilio)
    assert (reply.status, reply.pages, reply.next_page_uri) == ("ok", 2, f"{LIST}?Page=2")
    assert len(reply.body["messages"]) == 4
    assert reply.attempts == 2 + 1 + 2
    assert reply.warnings == [
        "w0",
        "attempt 1: HTTP 500",
        "stopped after 2 pages: page 3 HTTP 500, Twilio code 20500",
    ]


async def test_a_page_without_an_answer_or_that_is_no_list_stops_the_walk() -> None:
    first, twilio = chain(3)
    twilio.pages[f"{LIST}?Page=1"] = Sent(None, Attempt(error=CallTimeout("no answer")), 1)
    reply = await follow(first, twilio)
    assert reply.warnings[-1] == "stopped after 1 pages: page 2 timeout (CallTimeout)"
    twilio.pages[f"{LIST}?Page=1"] = ok({"sid": "SM1"})
    reply = await follow(first, twilio)
    assert reply.warnings[-1] == "stopped after 1 pages: page 2 HTTP 200"
    assert (reply.pages, reply.next_page_uri) == (1, f"{LIST}?Page=1")


async def test_a_next_page_that_cannot_be_called_stops_the_walk() -> None:
    first = first_reply(body(0, "https://evil.example/x?Page=1"))
    reply = await follow(first, Twilio({}))
    assert reply.warnings == [
        "w0",
        "stopped after 1 pages: next_page_uri must be relative or on a twilio.com host",
    ]
    assert reply.next_page_uri == "https://evil.example/x?Page=1"


async def test_a_v1_list_says_where_to_continue_in_its_meta() -> None:
    nxt = "https://messaging.twilio.com/v1/Services?Page=1"
    first = first_reply(body(0, nxt, meta=True))
    reply = await follow(first, Twilio({nxt: ok(body(1, None, meta=True))}))
    assert reply.pages == 2 and len(reply.body["messages"]) == 4
    assert reply.body["meta"] == {"key": "messages", "next_page_url": None}
    assert "next_page_uri" not in reply.body and reply.next_page_uri is None


async def test_an_answer_that_is_not_a_list_is_returned_with_a_warning() -> None:
    first = first_reply({"sid": "SM1", "status": "queued"})
    twilio = Twilio({})
    reply = await follow(first, twilio)
    assert reply.body == {"sid": "SM1", "status": "queued"} and reply.pages == 1
    assert reply.warnings == ["w0", NOT_A_LIST]
    assert twilio.sent == []
