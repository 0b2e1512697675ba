"""Turn what came back (a generated `Response`, an httpx exception) into the documented result dicts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import httpx
from cms_api_client.models import ErrorResponse, TrackResponse
from cms_api_client.types import Response

from ._http import UnreadableBody
from ._types import TrackError, TrackResult, TrackSuccess

DEFAULT_MESSAGE = "Event tracked successfully"


def error(
    message: str, *, kind: str, status_code: int | None = None, details: dict[str, Any] | None = None
) -> TrackError:
    return {"success": False, "error": message, "status_code": status_code, "type": kind, "details": details}


def validation_error(problems: dict[str, str]) -> TrackError:
    return error(f"Invalid arguments: {', '.join(problems)}", kind="validation_error", details=problems)


class StatusOnly(Response[ErrorResponse | TrackResponse]):
    """An answer of which only the status line and headers can be used: `problem` says what is wrong with its
    body; `incomplete`: it did not arrive whole (see `UnreadableBody`)."""

    # A plain subclass: an attrs one costs `import cms_python` ~0.4 ms.
    __slots__ = ("incomplete", "problem")

    def __init__(self, response: httpx.Response, *, problem: str, incomplete: bool) -> None:
        super().__init__(response.status_code, b"", response.headers, None)
        self.problem = problem
        self.incomplete = incomplete


def status_only(exc: UnreadableBody) -> StatusOnly:
    """The answer an `UnreadableBody` stands for: like any answer, its status decides the call's outcome."""
    return StatusOnly(exc.response, problem=exc.problem, incomplete=exc.incomplete)


def from_response(response: Response[ErrorResponse | TrackResponse]) -> TrackResult:
    if isinstance(response, StatusOnly):
        return _from_status_only(response)
    status = response.status_code
    parsed = response.parsed
    if 200 <= status < 300:
        if isinstance(parsed, TrackResponse):
            body = parsed.to_dict()
            # The API's older shape reports failure as a 2xx with `success`/`status` false.
            if body.pop("success", True) is not False and body.pop("status", True) is not False:
                return _success(body)
            return _http_error(status, body)
        if not response.content.strip():  # e.g. 204: accepted, nothing to report
            return {"success": True, "message": DEFAULT_MESSAGE, "data": None}
        return error(
            f"HTTP {status}: the response body is not the API's JSON (content-type: "
            f"{response.headers.get('content-type', 'none')}); is the host right?",
            kind="invalid_response",
            status_code=status,
        )
    fields = parsed.to_dict() if isinstance(parsed, ErrorResponse) else _json_object(response.content)
    return _http_error(status, fields, response.headers)


def from_exception(exc: httpx.HTTPError) -> TrackError:
    if isinstance(exc, httpx.TimeoutException):
        return error(f"Request timed out ({type(exc).__name__})", kind="timeout")
    if isinstance(exc, httpx.TransportError):
        return error(f"Network error: {exc or type(exc).__name__}", kind="network_error")
    return error(f"Unreadable response: {exc or type(exc).__name__}", kind="invalid_response")


def _from_status_only(response: StatusOnly) -> TrackResult:
    status = response.status_code
    if not 200 <= status < 300:
        failure = _http_error(status, {}, response.headers)
        failure["error"] += f" (the response body could not be read: {response.problem})"
        return failure
    if response.incomplete:
        # The server accepted the event; only its answer's body was lost. Saying "failed" would invite the
        # caller to send the event again, and a lead sent again under a new idempotency key counts twice.
        message = f"Event tracked (HTTP {status}), but the response body could not be read: {response.problem}"
        return {"success": True, "message": message, "data": None}
    return error(
        f"HTTP {status}: the response body cannot be used: {response.problem}; is the host right?",
        kind="invalid_response",
        status_code=status,
    )


def _success(body: dict[str, Any]) -> TrackSuccess:
    message = body.pop("message", None)
    return {
        "success": True,
        "message": message if isinstance(message, str) and message else DEFAULT_MESSAGE,
        "data": body.get("data", body),
    }


def _http_error(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> TrackError:
    message = body.get("error") or body.get("message")
    kind = body.get("type")
    details = body.get("details")
    if not isinstance(message, str) or not message:
        message = _status_line(status)
        if 300 <= status < 400 and headers is not None:
            message += f": redirects are not followed (Location: {headers.get('location', 'none')})"
    return error(
        message,
        kind=kind if isinstance(kind, str) and kind else "http_error",
        status_code=status,
        details=details if isinstance(details, dict) else None,
    )


def _json_object(content: bytes) -> dict[str, Any]:
    """The body as a JSON object, for error bodies the generated model could not take (a wrong-typed field)."""
    try:
        body = json.loads(content)
    # Not JSON (HTML, empty), nested beyond what Python parses, or more than this process can hold.
    except (ValueError, RecursionError, MemoryError):
        return {}
    return body if isinstance(body, dict) else {}


def _status_line(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"
