"""Fault injection against the loopback server: every case returns a result dict, in bounded time, without raising.

Each case checks the returned dict, how many attempts reached the server, their Idempotency-Keys and the time
taken. Clients use max_retries=2 (three attempts) and a 10 ms initial backoff.
"""

from __future__ import annotations

import json
import time
import uuid
from http import HTTPStatus

import pytest

from .conftest import LEAD, TOKEN
from .servers import SUCCESS, LoopbackServer, RawServer, Reply

JSON = {"Content-Type": "application/json"}
MB = 1024 * 1024


@pytest.fixture
def make(face, server):
    """`make(**client_kwargs)`: a client of the face under test at the server, with max_retries=2."""

    def build(**kwargs):
        kwargs.setdefault("max_retries", 2)
        return face.client(host=server.url, **kwargs)

    return build


def call(client, **overrides):
    """Track a lead; returns (result, seconds taken). Any exception fails the test."""
    started = time.monotonic()
    result = client.track_lead(**{**LEAD, **overrides})
    return result, time.monotonic() - started


def keys(server: LoopbackServer) -> list[str]:
    return [next(v for k, v in r.headers.items() if k.lower() == "idempotency-key") for r in server.requests]


def assert_one_key(server: LoopbackServer, attempts: int) -> None:
    """`attempts` requests reached the server, all with the same UUID4 Idempotency-Key."""
    seen = keys(server)
    assert len(seen) == attempts
    assert len(set(seen)) == 1
    assert uuid.UUID(seen[0]).version == 4


def failure(error: str, status: int | None, kind: str, details=None) -> dict:
    return {"success": False, "error": error, "status_code": status, "type": kind, "details": details}


# --- the connection -----------------------------------------------------------------------------------------------


def test_drop_before_answering_every_time(make, server):
    server.default = Reply(action="drop")
    result, elapsed = call(make())
    assert result == failure("Network error: Server disconnected without sending a response.", None, "network_error")
    assert_one_key(server, 3)
    assert elapsed < 2


def test_drop_once_then_success(make, server):
    server.queue(Reply(action="drop"))
    result, elapsed = call(make())
    assert result == SUCCESS
    assert_one_key(server, 2)
    assert elapsed < 2


def test_answer_after_a_delay_within_the_timeout(make, server):
    server.default = Reply(delay=0.1)
    result, elapsed = call(make(timeout=0.5))
    assert result == SUCCESS
    assert_one_key(server, 1)
    assert 0.1 <= elapsed < 2


def test_answer_after_a_delay_beyond_the_timeout(make, server):
    server.default = Reply(delay=0.3)
    result, elapsed = call(make(timeout=0.2))
    assert result == failure("Request timed out (ReadTimeout)", None, "timeout")
    assert_one_key(server, 3)
    # Three attempts of 0.2 s each, and two short backoffs.
    assert 0.6 <= elapsed < 3


def test_slow_attempt_then_fast_one(make, server):
    server.queue(Reply(delay=0.3))
    result, elapsed = call(make(timeout=0.2))
    assert result == SUCCESS
    assert_one_key(server, 2)
    assert 0.2 <= elapsed < 2


def test_truncated_body_every_time(make, server):
    server.default = Reply(action="truncate")
    result, elapsed = call(make())
    assert result["success"] is False
    assert result["type"] == "network_error"
    assert result["status_code"] is None
    assert "peer closed connection" in result["error"]
    assert_one_key(server, 3)
    assert elapsed < 2


def test_truncated_body_once_then_success(make, server):
    server.queue(Reply(status=200, action="truncate"))
    result, elapsed = call(make())
    assert result == SUCCESS
    assert_one_key(server, 2)
    assert elapsed < 2


# --- rate limiting and server errors -----------------------------------------------------------------------------


def test_429_with_retry_after_then_success(make, server):
    server.queue(Reply(status=429, body={"success": False, "error": "Too many"}, headers={"Retry-After": "1"}))
    result, elapsed = call(make())
    assert result == SUCCESS
    assert_one_key(server, 2)
    assert 0.9 <= elapsed < 5


def test_429_every_time_reports_the_429(make, server):
    server.default = Reply(
        status=429,
        body={"success": False, "error": "Too many requests", "type": "rate_limited"},
        headers={"Retry-After": "0"},
    )
    result, elapsed = call(make())
    assert result == failure("Too many requests", 429, "rate_limited")
    assert_one_key(server, 3)
    assert elapsed < 2


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (
            500,
            {"success": False, "error": "Database down", "type": "internal", "statusCode": 500, "details": {"id": 7}},
            {},
            failure("Database down", 500, "internal", {"id": 7}),
        ),
        (
            502,
            b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            {},
            failure("HTTP 502 Bad Gateway", 502, "http_error"),
        ),
        (503, b"", {}, failure("HTTP 503 Service Unavailable", 503, "http_error")),
        (504, b"", JSON, failure("HTTP 504 Gateway Timeout", 504, "http_error")),
        (500, b'{"success": tru', JSON, failure("HTTP 500 Internal Server Error", 500, "http_error")),
        (599, b"", {}, failure("HTTP 599", 599, "http_error")),
    ],
    ids=["json", "html", "empty", "empty-json-type", "malformed-json", "unknown-5xx"],
)
def test_5xx_bodies(make, server, status, body, headers, expected):
    server.default = Reply(status=status, body=body, headers=headers)
    result, elapsed = call(make())
    assert result == expected
    # 599 is not in the retry table: one attempt.
    assert_one_key(server, 1 if status == 599 else 3)
    assert elapsed < 2


# --- bodies that are not what the API sends ------------------------------------------------------------------------


def test_malformed_json_200_is_invalid_response_and_not_retried(make, server):
    server.default = Reply(status=200, body=b'{"success": tru', headers=JSON)
    result, elapsed = call(make())
    assert result["success"] is False
    assert result["type"] == "invalid_response"
    assert result["status_code"] == 200
    assert "application/json" in result["error"]
    assert_one_key(server, 1)
    assert elapsed < 1


def test_html_200_is_invalid_response_and_not_retried(make, server):
    server.default = Reply(status=200, body=b"<html>ok</html>")
    result, elapsed = call(make())
    assert result["success"] is False
    assert result["type"] == "invalid_response"
    assert result["status_code"] == 200
    assert "text/html" in result["error"]
    assert result["details"] is None
    assert_one_key(server, 1)
    assert elapsed < 1


@pytest.mark.parametrize("body", [b"[1, 2]", b'"ok"', b"null", b"42"])
def test_200_json_that_is_not_an_object_is_invalid_response(make, server, body):
    server.default = Reply(status=200, body=body, headers=JSON)
    result, _ = call(make())
    assert result["type"] == "invalid_response"
    assert_one_key(server, 1)


def test_huge_error_body(make, server):
    message = "x" * (5 * MB)
    server.default = Reply(status=422, body={"success": False, "error": message, "type": "validation"})
    result, elapsed = call(make())
    assert result == failure(message, 422, "validation")
    assert_one_key(server, 1)
    assert elapsed < 5


def test_huge_retryable_error_body(make, server):
    server.default = Reply(status=503, body={"success": False, "error": "y" * (5 * MB)})
    result, elapsed = call(make())
    assert result["status_code"] == 503
    assert len(result["error"]) == 5 * MB
    assert_one_key(server, 3)
    assert elapsed < 10


def test_huge_success_data(make, server):
    data = {"blob": "z" * (5 * MB), "items": list(range(10_000))}
    server.default = Reply(body={"success": True, "message": "stored", "data": data})
    result, elapsed = call(make())
    assert result == {"success": True, "message": "stored", "data": data}
    assert_one_key(server, 1)
    assert elapsed < 5


def test_huge_html_error_page(make, server):
    server.default = Reply(status=502, body=b"<html>" + b"a" * (5 * MB) + b"</html>")
    result, elapsed = call(make())
    assert result == failure("HTTP 502 Bad Gateway", 502, "http_error")
    assert_one_key(server, 3)
    assert elapsed < 10


@pytest.mark.parametrize("status", [200, 422, 500])
def test_unbalanced_deep_nesting(make, server, status):
    server.default = Reply(status=status, body=b"[" * 100_000, headers=JSON)
    result, elapsed = call(make())
    assert result["success"] is False
    assert result["status_code"] == status
    assert result["type"] == ("invalid_response" if status == 200 else "http_error")
    assert_one_key(server, 3 if status == 500 else 1)
    assert elapsed < 2


@pytest.mark.parametrize("status", [200, 422])
def test_balanced_deep_nesting_beyond_the_json_parser(make, server, status):
    # Too deep for `json` (RecursionError while parsing): the body counts as unreadable.
    server.default = Reply(status=status, body=b"[" * 100_000 + b"]" * 100_000, headers=JSON)
    result, _ = call(make())
    assert result["success"] is False
    assert result["type"] == ("invalid_response" if status == 200 else "http_error")
    assert_one_key(server, 1)


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def test_deep_but_parseable_success_data(make, server):
    server.default = Reply(body=b'{"success": true, "data": ' + nested(600) + b"}", headers=JSON)
    result, _ = call(make())
    assert result["success"] is True
    depth, node = 0, result["data"]
    while isinstance(node, dict):
        depth, node = depth + 1, node["a"]
    assert depth == 600
    assert_one_key(server, 1)


def test_deep_but_parseable_error_details(make, server):
    server.default = Reply(status=422, body=b'{"error": "bad", "details": ' + nested(600) + b"}", headers=JSON)
    result, _ = call(make())
    assert result["success"] is False
    assert result["status_code"] == 422
    assert result["error"] == "bad"
    assert_one_key(server, 1)


# --- redirects ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [302, 307, 308])
def test_redirect_is_not_followed_and_the_token_goes_nowhere_else(make, server, status):
    elsewhere = LoopbackServer()
    try:
        location = f"{elsewhere.url}/steal"
        server.default = Reply(status=status, body=b"", headers={"Location": location})
        result, elapsed = call(make())
        assert result == failure(
            f"HTTP {status} {_phrase(status)}: redirects are not followed (Location: {location})", status, "http_error"
        )
        assert_one_key(server, 1)
        assert elsewhere.requests == []
        assert elapsed < 1
    finally:
        elsewhere.close()


def _phrase(status: int) -> str:
    return HTTPStatus(status).phrase


# --- the token never comes back in a result -------------------------------------------------------------------------


def test_echoed_token_is_redacted_from_the_result(make, server):
    echoed = {"success": False, "error": f"bad token Bearer {TOKEN}", "details": {"auth": [f"Bearer {TOKEN}"]}}
    server.default = Reply(status=401, body=echoed)
    result, _ = call(make())
    assert result["status_code"] == 401
    assert TOKEN not in json.dumps(result)
    assert_one_key(server, 1)


BACKSLASH_TOKEN = "sk_live\\AbC'7d1e\"9f/x"


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(f"HTTP/1.1 2000 {BACKSLASH_TOKEN}\r\n\r\n", id="malformed-status-line"),
        pytest.param(f"HTTP/1.1 200 OK\r\nBad Header {BACKSLASH_TOKEN}\r\n\r\n", id="malformed-header"),
    ],
)
def test_a_token_echoed_in_an_unreadable_answer_is_redacted_in_every_form(face, answer):
    # h11 quotes the bytes it could not read: repr doubles the backslash and escapes the quote.
    server = RawServer(answer.encode())
    try:
        result = face.client(token=BACKSLASH_TOKEN, host=server.url, max_retries=0).track_lead(**LEAD)
    finally:
        server.close()
    assert result["success"] is False
    assert "[redacted]" in result["error"], result
    for secret in ("AbC", BACKSLASH_TOKEN, repr(BACKSLASH_TOKEN)[1:-1], json.dumps(BACKSLASH_TOKEN)[1:-1]):
        assert secret not in json.dumps(result) + result["error"]
