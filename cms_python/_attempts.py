"""The retry loop's decisions for one call, shared by both client faces (which only send and sleep)."""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar, cast

import httpx
from cms_api_client import Client

from . import _retry
from ._requests import ApiResponse, TrackRequest
from ._results import from_exception, from_response
from ._types import TrackResult

logger = logging.getLogger("cms_python")
# A library logs only where the app configured logging (no "last resort" output to stderr).
logger.addHandler(logging.NullHandler())
#: Shorter tokens (test values) cannot be told apart from ordinary words in a message.
_REDACTABLE_LENGTH = 8
_T = TypeVar("_T")


class Attempts:
    """Bookkeeping for the attempts of one `TrackRequest`.

    A face calls `begin(api)` for the generated function's arguments, sends, and hands the outcome to
    `finish`, which returns the seconds to wait before the next attempt, or the final result.
    """

    __slots__ = ("_max_retries", "_started", "_token", "number", "request")

    def __init__(self, request: TrackRequest, *, max_retries: int, token: str) -> None:
        self.request = request
        self.number = 0
        self._max_retries = max_retries
        self._token = token
        self._started = 0.0

    def begin(self, api: Client) -> dict[str, Any]:
        self.number += 1
        self._started = time.perf_counter()
        request = self.request
        return {"client": api, "body": request.body, "idempotency_key": request.idempotency_key}

    def finish(self, outcome: ApiResponse | httpx.HTTPError) -> float | TrackResult:
        elapsed_ms = (time.perf_counter() - self._started) * 1000
        path = self.request.operation.path
        if isinstance(outcome, httpx.HTTPError):
            result: TrackResult = from_exception(outcome)
            retryable = _retry.is_retryable_exception(outcome)
            requested_wait = None
            logger.debug("POST %s -> %s (attempt %d, %.1f ms)", path, type(outcome).__name__, self.number, elapsed_ms)
        else:
            result = from_response(outcome)
            retryable = outcome.status_code in _retry.RETRYABLE_STATUSES
            requested_wait = _retry.retry_after(outcome.headers) if retryable else None
            logger.debug("POST %s -> %d (attempt %d, %.1f ms)", path, outcome.status_code, self.number, elapsed_ms)
        if result["success"]:
            return self._without_token(result)
        if retryable and self.number <= self._max_retries:
            wait = _retry.backoff(self.number - 1) if requested_wait is None else requested_wait
            if wait <= _retry.MAX_RETRY_AFTER:
                return wait
        failure = self._without_token(result)
        # The server's message can echo request values (an email): those stay out of WARNING records.
        logger.warning(
            "POST %s failed after %d attempt(s): status %s, type %s",
            path, self.number, failure["status_code"], failure["type"],
        )  # fmt: skip
        return failure

    def _without_token(self, result: _T) -> _T:
        """A server or proxy may echo the Authorization header back: never hand the token on."""
        return _redact(result, self._token) if len(self._token) >= _REDACTABLE_LENGTH else result


def _redact(value: _T, token: str) -> _T:
    """A copy of a JSON-like value with the token replaced in every string, dict keys included.

    Iterative, not recursive: the nesting depth of `details` is the server's choice.
    """
    root: list[Any] = [value]
    pending: list[tuple[Any, Any]] = [(root, 0)]
    while pending:
        container, key = pending.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = item.replace(token, "[redacted]")
        elif isinstance(item, dict):
            copy = {_redact_key(name, token): inner for name, inner in item.items()}
            container[key] = copy
            pending.extend((copy, name) for name in copy)
        elif isinstance(item, list):
            container[key] = items = list(item)
            pending.extend((items, index) for index in range(len(items)))
    return cast(_T, root[0])


def _redact_key(name: object, token: str) -> object:
    return name.replace(token, "[redacted]") if isinstance(name, str) else name
