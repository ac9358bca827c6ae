"""The delivery record: one status of a tracked send, on the deliveries topic. Pure.

A tracked send (an envelope with ``track``) gets a record for each new status of its message
or call, from Twilio's status callbacks or from reconciling with Twilio, keyed like the request
and numbered per request; exactly one of them is ``final``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["DeliveryRecord", "Resource", "Source"]

Resource = Literal["message", "call"]
Source = Literal["callback", "reconcile"]


class DeliveryRecord(BaseModel):
    """One new status of a tracked send (topic ``BRIDGE_TRACKING__TOPIC``, key = the request's
    key, header ``id`` = the request id)."""

    id: str = Field(description="The request id.")
    sid: str | None = Field(description="The message's or call's SID (None: never learnt).")
    resource: Resource
    status: str = Field(
        description="Twilio's status (messages: queued, sending, sent, delivered, "
        "undelivered, failed, canceled, read; calls: initiated, ringing, in-progress, "
        "completed, busy, no-answer, failed, canceled), or expired when the bridge gave up."
    )
    final: bool = Field(
        description="True on exactly one record per request: the first final status."
    )
    error_code: int | None = None
    error_message: str | None = None
    sequence: int = Field(ge=1, description="1, 2, ... per request: deduplicate on (id, sequence).")
    source: Source = Field(description="A status callback, or a fetch from Twilio (reconcile).")
    at: str = Field(description="When the bridge published it, RFC 3339 UTC.")
    metadata: dict[str, Any] | None = Field(default=None, description="The request's, echoed.")
    event: dict[str, Any] = Field(
        default_factory=dict,
        description="The callback's parameters as Twilio sent them; for a reconcile, the "
        "fields of the fetched resource.",
    )
