"""Fault injection against the loopback server: every case returns a result dict, in bounded time, without raising.

Each case checks the returned dict, how many attempts reached the server, their Idempotency-Keys and the time
taken. Clients use max_retries=2 (three attempts) and a 10 ms initial backoff.
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import time
import tracemalloc
import uuid
import zlib
from http import HTTPStatus

import httpx
import pytest

from cms_python._http import MAX_BODY

from ..conftest import LEAD, TOKEN
from ..support import SUPPORT
from ..support.servers import SUCCESS, LoopbackServer, RawServer, Reply, read_request

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


def test_drop_before_answering_every_time(make, server, waits):
    server.default = Reply(action="drop")
    result, _ = call(make())
    assert result == failure("Network error: Server disconnected without sending a response.", None, "network_error")
    assert_one_key(server, 3)
    assert max(waits, default=0) < 0.1  # the tests' 10 ms backoff, no longer


def test_drop_once_then_success(make, server, waits):
    server.queue(Reply(action="drop"))
    result, _ = call(make())
    assert result == SUCCESS
    assert_one_key(server, 2)
    assert max(waits, default=0) < 0.1  # the tests' 10 ms backoff, no longer


def test_answer_after_a_delay_within_the_timeout(make, server, waits):
    server.default = Reply(delay=0.1)
    result, elapsed = call(make(timeout=0.5))
    assert result == SUCCESS
    assert_one_key(server, 1)
    assert elapsed >= 0.1
    assert max(waits, default=0) < 0.1  # the tests' 10 ms backoff, no longer


def test_answer_after_a_delay_beyond_the_timeout(make, server, waits):
    server.default = Reply(delay=0.3)
    result, elapsed = call(make(timeout=0.2))
    assert result == failure("Request timed out (ReadTimeout)", None, "timeout")
    assert_one_key(server, 3)
    # Three attempts of 0.2 s each, and two short backoffs.
    assert elapsed >= 0.6
    assert max(waits, default=0) < 0.1  # the tests' 10 ms backoff, no longer


def test_slow_attempt_then_fast_one(make, server, waits):
    server.queue(Reply(delay=0.3))
    result, elapsed = call(make(timeout=0.2))
    assert result == SUCCESS
    assert_one_key(server, 2)
    assert elapsed >= 0.2
    assert max(waits, default=0) < 0.1  # the tests' 10 ms backoff, no longer


def test_answer_cut_short_after_a_2xx_status_is_tracked_and_not_retried(make, server):
    # The server accepted the event: "failed" would invite sending it again (a lead would count twice).
    server.default = Reply(action="truncate")
    result, _ = call(make())
    assert result["success"] is True
    assert result["data"] is None
    assert result["message"].startswith("Event tracked (HTTP 200), but the response body could not be read")
    assert "peer closed connection" in result["message"]
    assert_one_key(server, 1)


def test_answer_cut_short_after_a_retryable_status_is_retried(make, server):
    server.queue(Reply(status=503, action="truncate"))
    result, _ = call(make())
    assert result == SUCCESS
    assert_one_key(server, 2)


def test_answer_cut_short_after_an_error_status_keeps_the_status(make, server):
    server.default = Reply(status=429, headers={"Retry-After": "3600"}, action="truncate")
    result, _ = call(make())
    assert result["success"] is False
    assert result["status_code"] == 429
    assert result["type"] == "http_error"
    assert result["error"].startswith("HTTP 429 Too Many Requests (the response body could not be read: ")
    assert_one_key(server, 1)  # its Retry-After, longer than the SDK waits, still counts


# --- rate limiting and server errors -----------------------------------------------------------------------------


def test_429_with_retry_after_then_success(make, server, waits):
    server.queue(Reply(status=429, body={"success": False, "error": "Too many"}, headers={"Retry-After": "1"}))
    result, elapsed = call(make())
    assert result == SUCCESS
    assert_one_key(server, 2)
    assert elapsed >= 0.9
    assert waits == [1.0]  # the Retry-After


def test_429_every_time_reports_the_429(make, server, waits):
    server.default = Reply(
        status=429,
        body={"success": False, "error": "Too many requests", "type": "rate_limited"},
        headers={"Retry-After": "0"},
    )
    result, _ = call(make())
    assert result == failure("Too many requests", 429, "rate_limited")
    assert_one_key(server, 3)
    assert waits == [0.0, 0.0]  # Retry-After: 0, twice


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
def test_5xx_bodies(make, server, status, body, headers, expected, waits):
    server.default = Reply(status=status, body=body, headers=headers)
    result, _ = call(make())
    assert result == expected
    # 599 is not in the retry table: one attempt.
    assert_one_key(server, 1 if status == 599 else 3)
    assert max(waits, default=0) < 0.1  # the tests' 10 ms backoff, no longer


# --- bodies that are not what the API sends ------------------------------------------------------------------------


def test_malformed_json_200_is_invalid_response_and_not_retried(make, server, waits):
    server.default = Reply(status=200, body=b'{"success": tru', headers=JSON)
    result, _ = call(make())
    assert result["success"] is False
    assert result["type"] == "invalid_response"
    assert result["status_code"] == 200
    assert "application/json" in result["error"]
    assert_one_key(server, 1)
    assert waits == []  # not retried


def test_html_200_is_invalid_response_and_not_retried(make, server, waits):
    server.default = Reply(status=200, body=b"<html>ok</html>")
    result, _ = call(make())
    assert result["success"] is False
    assert result["type"] == "invalid_response"
    assert result["status_code"] == 200
    assert "text/html" in result["error"]
    assert result["details"] is None
    assert_one_key(server, 1)
    assert waits == []  # not retried


@pytest.mark.parametrize("body", [b"[1, 2]", b'"ok"', b"null", b"42"])
def test_200_json_that_is_not_an_object_is_invalid_response(make, server, body):
    server.default = Reply(status=200, body=body, headers=JSON)
    result, _ = call(make())
    assert result["type"] == "invalid_response"
    assert_one_key(server, 1)


# --- bodies: at most MAX_BODY, received or decoded ------------------------------------------------------------------


def test_huge_error_body_keeps_its_status(make, server):
    server.default = Reply(status=422, body={"success": False, "error": "x" * (5 * MB), "type": "validation"})
    result, _ = call(make())
    assert result == failure(
        "HTTP 422 Unprocessable Entity (the response body could not be read: it is larger than 1,048,576 bytes)",
        422,
        "http_error",
    )
    assert_one_key(server, 1)


def test_huge_retryable_error_body_is_retried(make, server):
    server.default = Reply(status=503, body={"success": False, "error": "y" * (5 * MB)})
    result, _ = call(make())
    assert result["status_code"] == 503
    assert result["type"] == "http_error"
    assert_one_key(server, 3)


def test_huge_html_error_page(make, server):
    server.default = Reply(status=502, body=b"<html>" + b"a" * (5 * MB) + b"</html>")
    result, _ = call(make())
    assert result == failure(
        "HTTP 502 Bad Gateway (the response body could not be read: it is larger than 1,048,576 bytes)",
        502,
        "http_error",
    )
    assert_one_key(server, 3)


def test_huge_success_body_is_invalid_response(make, server):
    data = {"blob": "z" * (5 * MB)}
    server.default = Reply(body={"success": True, "message": "stored", "data": data})
    result, _ = call(make())
    assert result == failure(
        "HTTP 200: the response body cannot be used: it is larger than 1,048,576 bytes; is the host right?",
        200,
        "invalid_response",
    )
    assert_one_key(server, 1)


def padded(body: bytes, size: int) -> bytes:
    """`body` (JSON) padded with spaces to `size` bytes: still the same JSON."""
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_body_of_exactly_max_body_bytes_is_read(make, server, encoding):
    body = padded(json.dumps({"success": True, "data": {"id": "evt_1"}}).encode(), MAX_BODY)
    headers = {**JSON, "Content-Encoding": encoding} if encoding else JSON
    server.default = Reply(body=gzip.compress(body) if encoding else body, headers=headers)
    result, _ = call(make())
    assert result == {"success": True, "message": "Event tracked successfully", "data": {"id": "evt_1"}}


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_body_one_byte_past_max_body_is_too_large(make, server, encoding):
    body = padded(json.dumps({"success": True, "data": {"id": "evt_1"}}).encode(), MAX_BODY + 1)
    headers = {**JSON, "Content-Encoding": encoding} if encoding else JSON
    server.default = Reply(body=gzip.compress(body) if encoding else body, headers=headers)
    result, _ = call(make())
    assert result["type"] == "invalid_response"
    assert "larger than 1,048,576 bytes" in result["error"]


def gzipped_zeros(size: int, *, wbits: int = 31) -> bytes:
    """`size` zero bytes, gzip- (or with `wbits`, otherwise) compressed, without holding them in memory."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = bytes(MB)
    return b"".join(compressor.compress(block) for _ in range(size // MB)) + compressor.flush()


def test_doubly_gzipped_bomb_costs_about_max_body(make, server):
    # A few hundred bytes that decode to 256 MB: it used to be decoded whole (2 GB for a 1,827-byte one).
    bomb = gzip.compress(gzipped_zeros(256 * MB))
    assert len(bomb) < 2048
    server.default = Reply(body=bomb, headers={**JSON, "Content-Encoding": "gzip, gzip"})
    client = make()
    tracemalloc.start()
    try:
        result, _ = call(client)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["status_code"] == 200
    assert result["type"] == "invalid_response"
    assert "larger than 1,048,576 bytes" in result["error"]
    assert peak < 16 * MB
    assert_one_key(server, 1)


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("deflate", zlib.compress(json.dumps(SUCCESS).encode())),
        ("deflate", zlib.compress(json.dumps(SUCCESS).encode())[2:-4]),  # raw deflate, as some servers send it
        ("gzip", gzip.compress(json.dumps(SUCCESS).encode())),
        ("gzip, deflate", zlib.compress(gzip.compress(json.dumps(SUCCESS).encode()))),
        ("identity", json.dumps(SUCCESS).encode()),
    ],
)
def test_compressed_answers_are_decoded(make, server, encoding, body):
    server.default = Reply(body=body, headers={**JSON, "Content-Encoding": encoding})
    result, _ = call(make())
    assert result == SUCCESS
    assert server.requests[0].headers["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    "body",
    [b"not gzip at all", gzip.compress(json.dumps(SUCCESS).encode())[:-12]],
    ids=["garbage", "cut-short-gzip"],
)
def test_2xx_with_broken_gzip_is_invalid_response_with_its_status(make, server, body):
    server.default = Reply(status=201, body=body, headers={**JSON, "Content-Encoding": "gzip"})
    result, _ = call(make())
    assert result["status_code"] == 201
    assert result["type"] == "invalid_response"
    assert "content encoding is broken" in result["error"]
    assert_one_key(server, 1)


def test_thousands_of_content_encodings_are_refused_before_decoding(make, server):
    body = json.dumps(SUCCESS).encode()
    for _ in range(3):
        body = gzip.compress(body)
    server.default = Reply(body=body, headers={**JSON, "Content-Encoding": ", ".join(["gzip"] * 3)})
    result, _ = call(make())
    assert result["type"] == "invalid_response"
    assert "too many content encodings" in result["error"]
    # A header naming 20,000 of them costs nothing either.
    server.default = Reply(body=body, headers={**JSON, "Content-Encoding": ",".join(["gzip"] * 20_000)})
    assert "too many content encodings" in call(make())[0]["error"]


class OutOfMemory(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body whose reading runs out of memory after its first bytes."""

    def __iter__(self):
        yield b'{"success": '
        raise MemoryError

    async def __aiter__(self):
        yield b'{"success": '
        raise MemoryError


@pytest.mark.parametrize(("status", "attempts"), [(200, 1), (503, 3)])
def test_memory_error_while_reading_a_body_never_escapes(face, status, attempts):
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(status, headers=JSON, stream=OutOfMemory())

    settings = {"transport": httpx.MockTransport(answer)}
    callers = httpx.AsyncClient(**settings) if face.kind == "async" else httpx.Client(**settings)
    try:
        result, _ = call(face.client(host="https://api.example.com", http_client=callers, max_retries=2))
    finally:
        face.run(callers.aclose()) if face.kind == "async" else callers.close()
    assert result["success"] is (status == 200)
    assert "ran out of memory" in result["message" if status == 200 else "error"]
    assert len(requests) == attempts


def endless_chunks(raw: RawServer, connection: socket.socket) -> None:
    """A 200 whose chunked body never ends (here: stops after 256 MB, or when the client hangs up)."""
    read_request(connection)
    raw.send(connection, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b" " * 65536 + b"\r\n"
    for _ in range(4096):
        raw.send(connection, chunk)


def test_endless_chunked_answer_ends_at_max_body(face):
    raw = RawServer(endless_chunks)
    try:
        result, _ = call(face.client(host=raw.url))
    finally:
        raw.close()
    assert result["status_code"] == 200
    assert result["type"] == "invalid_response"
    assert "larger than 1,048,576 bytes" in result["error"]
    assert raw.connections == 1
    assert raw.sent < 64 * MB  # the client hung up: what is left is socket buffers


def broken_chunks(raw: RawServer, connection: socket.socket) -> None:
    read_request(connection)
    raw.send(connection, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")


def test_2xx_with_broken_chunked_encoding_is_tracked_and_not_retried(face):
    raw = RawServer(broken_chunks)
    try:
        result, _ = call(face.client(host=raw.url))
    finally:
        raw.close()
    assert result["success"] is True
    assert result["data"] is None
    assert "could not be read" in result["message"]
    assert raw.connections == 1


def trickle(head: bytes, rest: bytes, every: float = 0.05):
    """An answer: `head` at once, then `rest` a byte every `every` seconds (each well within the read timeout)."""

    def answer(raw: RawServer, connection: socket.socket) -> None:
        read_request(connection)
        raw.send(connection, head)
        for byte in rest:
            if raw.closed.is_set():
                return
            time.sleep(every)
            raw.send(connection, bytes([byte]))

    return answer


SUCCESS_BODY = json.dumps(SUCCESS).encode()
SUCCESS_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(SUCCESS_BODY)


def test_trickled_headers_end_at_the_attempts_deadline(face):
    # A byte every 50 ms: no read ever waits 0.25 s, yet the answer would take 4 s; the deadline is 4 x 0.25 s.
    raw = RawServer(trickle(b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 72 + b"\r\n" + SUCCESS_HEAD[17:]))
    try:
        result, _ = call(face.client(host=raw.url, timeout=0.25, max_retries=0))
    finally:
        raw.close()
    assert result == failure("Request timed out (ReadTimeout)", None, "timeout")


def endless_informational_answers(raw: RawServer, connection: socket.socket) -> None:
    """`100 Continue` every 20 ms; for a test's sake, the real answer after 3 s."""
    read_request(connection)
    for _ in range(150):
        if raw.closed.is_set():
            return
        raw.send(connection, b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(0.02)
    raw.send(connection, SUCCESS_HEAD + b"\r\n" + SUCCESS_BODY)


def test_endless_informational_answers_end_at_the_attempts_deadline(face):
    raw = RawServer(endless_informational_answers)
    try:
        result, _ = call(face.client(host=raw.url, timeout=0.25, max_retries=0))
    finally:
        raw.close()
    assert result == failure("Request timed out (ReadTimeout)", None, "timeout")


@pytest.mark.parametrize("through", [False, True], ids=["own-client", "callers-client"])
def test_trickled_body_ends_at_the_attempts_deadline(face, through):
    raw = RawServer(trickle(SUCCESS_HEAD + b"\r\n", SUCCESS_BODY))
    callers = (httpx.AsyncClient() if face.kind == "async" else httpx.Client()) if through else None
    try:
        result, _ = call(face.client(host=raw.url, timeout=0.25, max_retries=0, http_client=callers))
    finally:
        raw.close()
        if callers is not None:
            face.run(callers.aclose()) if face.kind == "async" else callers.close()
    # The 200 arrived: tracked, though its data never did.
    assert result["success"] is True
    assert result["data"] is None
    assert "could not be read" in result["message"]
    assert raw.connections == 1


@pytest.mark.parametrize("status", [200, 422, 500])
def test_unbalanced_deep_nesting(make, server, status, waits):
    server.default = Reply(status=status, body=b"[" * 100_000, headers=JSON)
    result, _ = call(make())
    assert result["success"] is False
    assert result["status_code"] == status
    assert result["type"] == ("invalid_response" if status == 200 else "http_error")
    assert_one_key(server, 3 if status == 500 else 1)
    assert max(waits, default=0) < 0.1  # the tests' 10 ms backoff, no longer


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
def test_redirect_is_not_followed_and_the_token_goes_nowhere_else(make, server, status, waits):
    elsewhere = LoopbackServer()
    try:
        location = f"{elsewhere.url}/steal"
        server.default = Reply(status=status, body=b"", headers={"Location": location})
        result, _ = call(make())
        assert result == failure(
            f"HTTP {status} {_phrase(status)}: redirects are not followed (Location: {location})", status, "http_error"
        )
        assert_one_key(server, 1)
        assert elsewhere.requests == []
        assert waits == []  # not retried
    finally:
        elsewhere.close()


def _phrase(status: int) -> str:
    return HTTPStatus(status).phrase


@pytest.mark.parametrize("location", ["http://[::1", "//:x", "https://a.example:port/"])
def test_redirect_with_an_unparseable_location_keeps_its_status_and_is_not_retried(make, server, location):
    server.default = Reply(status=302, body=b"", headers={"Location": location})
    result, _ = call(make())
    assert result == failure(f"HTTP 302 Found: redirects are not followed (Location: {location})", 302, "http_error")
    assert_one_key(server, 1)


# --- TLS -----------------------------------------------------------------------------------------------------------


def tls_handshake(raw: RawServer, connection: socket.socket) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(SUPPORT / "self-signed.pem")
    with context.wrap_socket(connection, server_side=True):
        pass


def test_a_certificate_the_client_refuses_is_not_retried(face):
    # A certificate that fails verification will fail it again: one attempt, and no token sent.
    raw = RawServer(tls_handshake)
    try:
        result, _ = call(face.client(host=f"https://127.0.0.1:{raw.port}"))
    finally:
        raw.close()
    assert result["type"] == "network_error"
    assert "CERTIFICATE_VERIFY_FAILED" in result["error"]
    assert raw.connections == 1


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
