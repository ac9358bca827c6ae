"""TwiML answers from Kafka: what an awaited event carries, and what makes an answer usable. Pure.

A webhook of a family the bridge answers from Kafka (``BRIDGE_TWIML__FAMILIES``) is published
with two CloudEvents extension attributes: ``twimlreplyto``, the topic to answer on, and
``twimldeadline``, the instant after which an answer is no use. A service answers with one
record: key = the event's ``id``, value = the TwiML document (UTF-8 XML), header
``content-type: application/xml``. The bridge sends Twilio that document only when
``check_twiml`` accepts it, and its family's fallback otherwise.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, Literal
from xml.parsers import expat

from bridge.contract.envelopes import utc_timestamp
from bridge.contract.events import CloudEvent

__all__ = [
    "DEADLINE",
    "DEFAULT_FALLBACKS",
    "REPLY_TO",
    "TWIML_FAMILIES",
    "TwimlFamily",
    "TwimlInvalid",
    "awaiting",
    "check_twiml",
]

TwimlFamily = Literal["messages", "voice"]
# The webhooks whose HTTP answer Twilio reads as TwiML; every other family gets an empty 200.
TWIML_FAMILIES: tuple[TwimlFamily, ...] = ("messages", "voice")
REPLY_TO = "twimlreplyto"
DEADLINE = "twimldeadline"
DEFAULT_FALLBACKS: dict[str, str] = {
    "voice": '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Sorry, we cannot take '
    "your call right now. Please try again later.</Say><Hangup/></Response>",
    "messages": '<?xml version="1.0" encoding="UTF-8"?><Response/>',
}
_UTF8 = ("UTF-8", "UTF8")


class TwimlInvalid(ValueError):
    """An answer Twilio cannot be given; the message says why, never quoting the document."""


def awaiting(event: CloudEvent, reply_to: str, deadline: datetime) -> CloudEvent:
    """``event`` telling services that its TwiML is awaited on ``reply_to`` until ``deadline``."""
    extensions = {**event.extensions, REPLY_TO: reply_to, DEADLINE: utc_timestamp(deadline)}
    return replace(event, extensions=extensions)


def check_twiml(document: bytes, max_bytes: int) -> str:
    """The document as text when Twilio can be given it: at most ``max_bytes``, well-formed
    UTF-8 XML without a DOCTYPE, root element ``<Response>``. Raises ``TwimlInvalid``.

    A DOCTYPE is refused rather than parsed: TwiML never needs one, and its entities are how
    a small document expands into a huge one.
    """
    if len(document) > max_bytes:
        raise TwimlInvalid(f"{len(document)} bytes, over the limit of {max_bytes}")
    root: list[str] = []
    parser = expat.ParserCreate(encoding="UTF-8")
    parser.StartElementHandler = lambda name, _: root.append(name) if not root else None
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.XmlDeclHandler = _require_utf8
    try:
        parser.Parse(document, True)
    except expat.ExpatError as exc:
        where = f"line {exc.lineno}, column {exc.offset}"
        raise TwimlInvalid(
            f"not well-formed XML: {expat.ErrorString(exc.code)} ({where})"
        ) from None
    if root != ["Response"]:
        raise TwimlInvalid(f"the root element is <{root[0][:40]}>, not <Response>")
    try:
        return document.decode()
    except UnicodeDecodeError:
        raise TwimlInvalid("not UTF-8") from None


def _refuse_doctype(*_: Any) -> None:
    raise TwimlInvalid("a DOCTYPE is not allowed in TwiML")


def _require_utf8(_version: str, encoding: str | None, _standalone: int) -> None:
    if encoding is not None and encoding.upper() not in _UTF8:
        raise TwimlInvalid(f"declared encoding {encoding[:20]!r}; TwiML answers are UTF-8")
