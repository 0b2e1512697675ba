"""Every answer the server (or a proxy, or the network) can give becomes one of the two documented result dicts."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import pytest

from ..conftest import LEAD, SALE, TOKEN
from ..support.servers import Reply

ERROR_STATUSES = [400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504]
API_ERROR = {
    "success": False,
    "error": "Validation failed",
    "type": "validation",
    "statusCode": 422,
    "details": {"f": "bad"},
}
HTML = b"<html><head><title>Oops</title></head><body><h1>Something went wrong</h1></body></html>"
DEFAULT_MESSAGE = "Event tracked successfully"


@pytest.fixture
def client(face, server):
    """No retries: a retryable status must come back after exactly one request, without backoff sleeps."""
    return face.client(host=server.url, max_retries=0)


@pytest.fixture
def call(client):
    """A valid lead call. Both endpoints share the result mapping; `test_sale_maps_like_lead` checks sales."""
    return lambda: client.track_lead(**LEAD)


def assert_error_shape(result: Any, status: int | None) -> None:
    assert isinstance(result, dict)
    assert set(result) == {"success", "error", "status_code", "type", "details"}
    assert result["success"] is False
    assert isinstance(result["error"], str)
    assert result["error"]
    assert result["status_code"] == status
    assert isinstance(result["type"], str)
    assert result["type"]
    assert result["details"] is None or isinstance(result["details"], dict)


def assert_success_shape(result: Any) -> None:
    assert isinstance(result, dict)
    assert set(result) == {"success", "message", "data"}
    assert result["success"] is True
    assert isinstance(result["message"], str)
    assert result["message"]


def status_line(status: int) -> str:
    return f"HTTP {status} {HTTPStatus(status).phrase}"


# --- success ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"success": True, "timestamp": "2024-05-01T12:00:00Z"},
            {"success": True, "message": DEFAULT_MESSAGE, "data": {"timestamp": "2024-05-01T12:00:00Z"}},
            id="api-reference-shape",
        ),
        pytest.param(
            {"status": True, "data": "abc"},
            {"success": True, "message": DEFAULT_MESSAGE, "data": "abc"},
            id="published-description-shape",
        ),
        pytest.param(
            {"success": True, "message": "M", "data": {"id": "evt_9", "n": 2}},
            {"success": True, "message": "M", "data": {"id": "evt_9", "n": 2}},
            id="seed-readme-shape",
        ),
        pytest.param(
            {"success": True, "message": "", "data": [1, 2]},
            {"success": True, "message": DEFAULT_MESSAGE, "data": [1, 2]},
            id="empty-message",
        ),
    ],
)
def test_success_shapes(call, server, body, expected):
    server.queue(Reply(status=200, body=body))
    result = call()
    assert result == expected
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [201, 202])
def test_other_2xx_with_json(call, server, status):
    server.queue(Reply(status=status, body={"success": True, "message": "Queued", "data": {"id": "evt_2"}}))
    assert call() == {"success": True, "message": "Queued", "data": {"id": "evt_2"}}


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(status=204, body=b""), id="204"),
        pytest.param(Reply(status=200, body=b"", headers={"Content-Type": "application/json"}), id="empty-200"),
        pytest.param(Reply(status=202, body=b"  \r\n"), id="blank-202"),
    ],
)
def test_empty_success_body(call, server, reply):
    server.queue(reply)
    assert call() == {"success": True, "message": DEFAULT_MESSAGE, "data": None}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"success": False, "error": "x"},
            {"success": False, "error": "x", "status_code": 200, "type": "http_error", "details": None},
            id="success-false",
        ),
        pytest.param(
            {"status": False, "data": "duplicate click"},
            {"success": False, "error": "HTTP 200 OK", "status_code": 200, "type": "http_error", "details": None},
            id="status-false",
        ),
        pytest.param(
            {"success": False, "error": "dup", "type": "conflict", "details": {"clickId": "seen"}},
            {"success": False, "error": "dup", "status_code": 200, "type": "conflict", "details": {"clickId": "seen"}},
            id="success-false-with-kind",
        ),
    ],
)
def test_2xx_that_reports_failure_is_an_error(call, server, body, expected):
    server.queue(Reply(status=200, body=body))
    assert call() == expected


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(status=200, body=HTML), id="html"),
        pytest.param(Reply(status=200, body=b"OK", headers={"Content-Type": "text/plain"}), id="text"),
        pytest.param(Reply(status=201, body=b"{not json", headers={"Content-Type": "application/json"}), id="bad-json"),
        pytest.param(Reply(status=200, body=[1, 2]), id="json-list"),
        pytest.param(Reply(status=200, body=None), id="json-null"),
        pytest.param(Reply(status=200, body="just a string"), id="json-string"),
    ],
)
def test_2xx_without_the_apis_json_is_invalid_response(call, server, reply):
    server.queue(reply)
    result = call()
    assert_error_shape(result, reply.status)
    assert result["type"] == "invalid_response"
    assert result["details"] is None


def test_2xx_with_wrong_typed_fields_does_not_raise(call, server):
    server.queue(Reply(status=200, body={"success": "yes", "message": 5, "data": {"id": 1}}))
    result = call()
    assert_success_shape(result)
    assert result["message"] == DEFAULT_MESSAGE


# --- HTTP errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ERROR_STATUSES)
def test_error_status_with_api_json(call, server, status):
    server.queue(Reply(status=status, body=API_ERROR))
    result = call()
    assert result == {
        "success": False,
        "error": "Validation failed",
        "status_code": status,  # the HTTP status, not the body's statusCode
        "type": "validation",
        "details": {"f": "bad"},
    }
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(lambda status: Reply(status=status, body=HTML), id="html"),
        pytest.param(lambda status: Reply(status=status, body=b""), id="empty"),
    ],
)
@pytest.mark.parametrize("status", ERROR_STATUSES)
def test_error_status_without_json(call, server, status, reply):
    server.queue(reply(status))
    result = call()
    assert result == {
        "success": False,
        "error": status_line(status),
        "status_code": status,
        "type": "http_error",
        "details": None,
    }
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        pytest.param(Reply(status=520, body=HTML), "HTTP 520", id="520-html"),
        pytest.param(Reply(status=599, body=b""), "HTTP 599", id="599-empty"),
        pytest.param(Reply(status=418, body={"error": "teapot", "type": "brew"}), "teapot", id="418-json"),
        pytest.param(Reply(status=520, body={"message": "origin down"}), "origin down", id="520-message-only"),
    ],
)
def test_non_standard_status(call, server, reply, message):
    server.queue(reply)
    result = call()
    assert_error_shape(result, reply.status)
    assert result["error"].startswith(message)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([1, 2, 3], id="list"),
        pytest.param(None, id="null"),
        pytest.param("error", id="string"),
        pytest.param(42, id="number"),
        pytest.param({"error": 123, "type": ["x"], "details": "not a dict"}, id="wrong-types"),
        pytest.param({"error": "", "type": "", "details": None}, id="empty-fields"),
        pytest.param({"error": None, "details": [1]}, id="null-error"),
        pytest.param({}, id="empty-object"),
    ],
)
@pytest.mark.parametrize("status", [422])
def test_malformed_error_json_never_raises(call, server, status, body):
    server.queue(Reply(status=status, body=body))
    result = call()
    assert result == {
        "success": False,
        "error": status_line(status),
        "status_code": status,
        "type": "http_error",
        "details": None,
    }


def test_error_json_keeps_a_valid_message_beside_wrong_typed_fields(call, server):
    server.queue(Reply(status=409, body={"error": "duplicate", "type": 7, "details": ["x"]}))
    assert call() == {"success": False, "error": "duplicate", "status_code": 409, "type": "http_error", "details": None}


# --- redirects ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307])
def test_redirect_is_not_followed(call, server, status):
    # The Location points back at this server: following it would show up as a second request.
    location = f"{server.url}/track/elsewhere"
    server.queue(Reply(status=status, body=b"", headers={"Location": location}))
    result = call()
    assert_error_shape(result, status)
    assert result["type"] == "http_error"
    assert location in result["error"]
    assert len(server.requests) == 1


# --- no response at all ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "kwargs"), [("track_lead", LEAD), ("track_sale", SALE)])
def test_connection_refused(face, closed_port, method, kwargs):
    client = face.client(host=f"http://127.0.0.1:{closed_port}", max_retries=0)
    result = getattr(client, method)(**kwargs)
    assert_error_shape(result, None)
    assert result["type"] == "network_error"
    assert result["details"] is None


def test_read_timeout(face, server):
    server.queue(Reply(delay=0.3))
    client = face.client(host=server.url, timeout=0.2, max_retries=0)
    result = client.track_lead(**LEAD)
    assert_error_shape(result, None)
    assert result["type"] == "timeout"
    assert len(server.requests) == 1


# --- sales go through the same mapping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(
            Reply(body={"success": True, "timestamp": "T"}),
            {"success": True, "message": DEFAULT_MESSAGE, "data": {"timestamp": "T"}},
            id="success",
        ),
        pytest.param(
            Reply(status=204, body=b""), {"success": True, "message": DEFAULT_MESSAGE, "data": None}, id="204"
        ),
        pytest.param(
            Reply(status=422, body=API_ERROR),
            {
                "success": False,
                "error": "Validation failed",
                "status_code": 422,
                "type": "validation",
                "details": {"f": "bad"},
            },
            id="422-json",
        ),
        pytest.param(
            Reply(status=503, body=HTML),
            {"success": False, "error": status_line(503), "status_code": 503, "type": "http_error", "details": None},
            id="503-html",
        ),
        pytest.param(
            Reply(status=200, body={"success": False, "error": "x"}),
            {"success": False, "error": "x", "status_code": 200, "type": "http_error", "details": None},
            id="200-success-false",
        ),
    ],
)
def test_sale_maps_like_lead(client, server, reply, expected):
    server.queue(reply)
    assert client.track_sale(**SALE) == expected
    assert server.requests[0].path == "/track/sale"


def test_sale_html_200_is_invalid_response(client, server):
    server.queue(Reply(status=200, body=HTML))
    result = client.track_sale(**SALE)
    assert_error_shape(result, 200)
    assert result["type"] == "invalid_response"


def test_a_token_echoed_in_a_success_body_is_redacted(client, server):
    server.queue(Reply(body={"success": True, "data": {"auth": f"Bearer {TOKEN}", TOKEN: 1}}))
    result = client.track_lead(**LEAD)
    assert result["success"] is True
    assert TOKEN not in json.dumps(result)
