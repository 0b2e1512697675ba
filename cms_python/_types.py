"""The result dicts every tracking call returns."""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class TrackSuccess(TypedDict):
    """The API recorded the event."""

    success: Literal[True]
    message: str
    #: The body's `data` if it has one, else the body's other fields (e.g. `{"timestamp": ...}`).
    data: Any


class TrackError(TypedDict):
    """The event was not recorded, or was never sent (`status_code` None)."""

    success: Literal[False]
    error: str
    #: The HTTP status, or None when no response came (bad arguments, network failure, timeout).
    status_code: int | None
    #: `validation_error`, `network_error`, `timeout`, `invalid_response`, `http_error`, or the API's own kind.
    type: str
    #: Per-field problems for `validation_error`; the API's `details` for HTTP errors.
    details: dict[str, Any] | None


TrackResult = TrackSuccess | TrackError


class QueuedEvent(TypedDict):
    """What `TrackQueued` says about the stored event."""

    event_id: str
    idempotency_key: str
    #: True when an event with this idempotency key and the same content was already in the outbox: nothing new
    #: was stored, and `event_id` is the earlier event's.
    duplicate: bool


class TrackQueued(TypedDict):
    """`Outbox.track_lead` / `track_sale`: the event is stored on disk (committed) and will be delivered."""

    success: Literal[True]
    message: str
    data: QueuedEvent
