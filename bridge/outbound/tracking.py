"""The processor's tracking step: complete a send's request, record it before it goes out.

``prepare`` applies the account's defaults for sends and, when the send is tracked, sets the
bridge's status callback (``bridge.tracking.correlation``); the call is built again from the
completed request. ``begin`` records the tracked send, acknowledged by Kafka, before the call
is sent, so that a callback arriving before Twilio's answer finds it; ``answered`` records
the SID Twilio gave (or that it refused the call).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from bridge.config import TrackingSettings
from bridge.contract.envelopes import AdvancedRequest, BasicRequest, Reply
from bridge.contract.events import trace_headers
from bridge.observability.tracing import tracer
from bridge.tracking.correlation import decide, new_token
from bridge.tracking.log import DeliveryLog
from bridge.tracking.send import Event, TrackedSend
from bridge.twilio.calls import CallBuilder, TwilioCall

__all__ = ["TrackingStep"]

Request = BasicRequest | AdvancedRequest


def _trace(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The trace context of the request's span (tracing on), else the request's own (the
    baggage stays with the reply)."""
    span = tracer().current().headers()
    if span:
        return tuple((k, v.decode("latin-1")) for k, v in trace_headers(span))
    return trace_headers(headers)


class TrackingStep:
    """Completes requests with their account's defaults and tracks the sends that ask for it."""

    def __init__(
        self,
        builder: CallBuilder,
        log: DeliveryLog,
        settings: TrackingSettings,
        public_url: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._builder = builder
        self._log = log
        self._settings = settings
        self._public_url = public_url
        self._clock = clock

    def prepare(
        self,
        request: Request,
        call: TwilioCall,
        headers: Iterable[tuple[str, str]],
        key: bytes | None,
    ) -> tuple[TwilioCall, TrackedSend | None]:
        """The call to send for ``request`` (built as ``call``) and, when tracked, its send;
        raises ``RequestInvalid`` for tracking that cannot be done."""
        choice = decide(
            request,
            call,
            settings=self._settings,
            public_url=self._public_url,
            token=new_token(),
            key=key,
            now=self._clock(),
        )
        if choice.request is not request:
            call = self._builder.build(choice.request, headers)
        send = choice.send
        if send is not None:
            send = replace(send, trace=_trace(headers))
        return call, send

    async def begin(self, send: TrackedSend) -> None:
        """Record the send; returns once Kafka acknowledged it."""
        await self._log.begin(send)

    async def answered(self, send: TrackedSend, reply: Reply) -> None:
        """Record Twilio's answer: the SID, or that Twilio refused the call (nothing sent)."""
        body = reply.body if isinstance(reply.body, dict) else {}
        sid = body.get("sid")
        refused = reply.status == "error" and reply.http_status is not None
        event = Event(
            "answer",
            account_sid=send.account_sid,
            sid=sid if isinstance(sid, str) else None,
            refused=refused,
        )
        await self._log.learnt(send.token, event)
