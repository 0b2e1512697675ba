"""The decisions of the retry loop for one call: no I/O, no sleeping.

Each delivery mode (the sync face, the async face) sends, hands what came back to `Attempts.decide`, and
acts on its `Decision`: `Wait` and send again, or stop with `Done` / `GaveUp`.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import httpx

from . import _retry
from ._operations import ApiResponse, TrackRequest
from ._printable import sdk_logger
from ._redaction import redact
from ._results import from_exception, from_response
from ._types import TrackError, TrackResult, TrackSuccess

logger = sdk_logger("cms_python")


# Decisions are NamedTuples, not dataclasses: a dataclass costs ~0.3 ms of `import cms_python` apiece.
class Wait(NamedTuple):
    """Send the same request again after `seconds`."""

    seconds: float


class Done(NamedTuple):
    """The API recorded the event."""

    result: TrackSuccess


class GaveUp(NamedTuple):
    """No more attempts. `retryable`: the same request may succeed later (network failure, timeout, 408, 429,
    5xx, including a `Retry-After` longer than the SDK waits for); False: it never will as it is (another 4xx,
    an invalid response). `retry_after`: the wait the server asked for, if it did."""

    result: TrackError
    retryable: bool
    retry_after: float | None = None


Decision = Wait | Done | GaveUp


class Attempts:
    """Bookkeeping for the attempts of one `TrackRequest`: call `start()` before each send, then `decide`."""

    __slots__ = ("_max_retries", "_path", "_started", "_token", "number")

    def __init__(self, request: TrackRequest[Any], *, max_retries: int, token: str) -> None:
        self.number = 0
        self._path = request.operation.path
        self._max_retries = max_retries
        self._token = token
        self._started = 0.0

    def start(self) -> None:
        self.number += 1
        self._started = time.perf_counter()

    def decide(self, outcome: ApiResponse | httpx.HTTPError) -> Decision:
        elapsed_ms = (time.perf_counter() - self._started) * 1000
        if isinstance(outcome, httpx.HTTPError):
            result: TrackResult = from_exception(outcome)
            retryable = _retry.is_retryable_exception(outcome)
            requested_wait = None
            status: object = type(outcome).__name__
        else:
            result = from_response(outcome)
            retryable = outcome.status_code in _retry.RETRYABLE_STATUSES
            requested_wait = _retry.retry_after(outcome.headers) if retryable else None
            status = outcome.status_code
        logger.debug("POST %s -> %s (attempt %d, %.1f ms)", self._path, status, self.number, elapsed_ms)
        if result["success"]:
            return Done(redact(result, self._token))
        if retryable and self.number <= self._max_retries:
            wait = _retry.backoff(self.number - 1) if requested_wait is None else requested_wait
            if wait <= _retry.MAX_RETRY_AFTER:
                return Wait(wait)
        failure = redact(result, self._token)
        # The server's message can echo request values (an email): those stay out of WARNING records.
        logger.warning(
            "POST %s failed after %d attempt(s): status %s, type %s",
            self._path, self.number, failure["status_code"], failure["type"],
        )  # fmt: skip
        return GaveUp(failure, retryable, requested_wait)
