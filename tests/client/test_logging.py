"""What the SDK logs on the "cms_python" logger: one DEBUG line per attempt, one WARNING when a call gives up,
never the token, and no request values above DEBUG."""

from __future__ import annotations

import ast
import gc
import logging
import re
import socket
import threading
from pathlib import Path

import pytest

import cms_python
import cms_python.integrations
from cms_python import CMSClient, Outbox, _redaction

from ..conftest import TOKEN
from ..support.servers import SUCCESS, RawServer, Reply

LOGGER = "cms_python"
EMAIL = "jane.private@example.com"
NAME = "Jane Private-Person"
CUSTOMER = "customer-7f3e2"
CLICK = "click-91ab7"
LEAD = {
    "click_id": CLICK,
    "event_name": "signup_started",
    "customer_external_id": CUSTOMER,
    "customer_name": NAME,
    "customer_email": EMAIL,
}
SALE = {**LEAD, "event_name": "purchase_completed", "invoice_id": "inv-secret-55", "amount": 4999, "currency": "USD"}
BODY_VALUES = [EMAIL, NAME, CUSTOMER, CLICK, "inv-secret-55"]
# "POST /track/lead -> 503 (attempt 2, 1.3 ms)"
ATTEMPT = re.compile(
    r"POST (?P<path>/track/\w+) -> (?P<outcome>\d{3}|[A-Za-z]+) \(attempt (?P<n>\d+), (?P<ms>\d+\.\d) ms\)"
)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


def sdk_records(caplog: pytest.LogCaptureFixture, level: int | None = None) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(LOGGER) and (level is None or r.levelno == level)]


def attempts(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    """The DEBUG attempt lines, parsed; fails on a DEBUG line of another shape."""
    parsed = []
    for record in sdk_records(caplog, logging.DEBUG):
        match = ATTEMPT.fullmatch(record.getMessage())
        assert match, record.getMessage()
        parsed.append(match.groupdict())
    return parsed


def assert_no_leaks(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + (record.exc_text or "")
        assert TOKEN not in text, record.getMessage()
        if record.levelno > logging.DEBUG and record.name.startswith(LOGGER):
            for value in BODY_VALUES:
                assert value not in text, (value, record.getMessage())


# --- one DEBUG record per attempt -------------------------------------------------------------------------------------


def test_success_logs_one_debug_line_and_no_warning(client, server, logs):
    assert client.track_lead(**LEAD) == SUCCESS
    (line,) = attempts(logs)
    assert line["path"] == "/track/lead"
    assert line["outcome"] == "200"
    assert line["n"] == "1"
    assert float(line["ms"]) >= 0
    assert sdk_records(logs, logging.WARNING) == []
    assert all(r.levelno == logging.DEBUG for r in sdk_records(logs))
    assert_no_leaks(logs)


def test_sale_attempts_name_the_sale_path(client, server, logs):
    server.queue(Reply(status=502, body=b""))
    assert client.track_sale(**SALE) == SUCCESS
    assert [(a["path"], a["outcome"], a["n"]) for a in attempts(logs)] == [
        ("/track/sale", "502", "1"),
        ("/track/sale", "200", "2"),
    ]
    assert sdk_records(logs, logging.WARNING) == []
    assert_no_leaks(logs)


def test_retries_log_each_attempt_with_status_or_exception_name(face, server, logs):
    client = face.client(host=server.url, timeout=0.2, max_retries=3)
    server.queue(Reply(status=503, body=b""), Reply(action="drop"), Reply(delay=0.3))
    assert client.track_lead(**LEAD) == SUCCESS
    assert [(a["outcome"], a["n"]) for a in attempts(logs)] == [
        ("503", "1"),
        ("RemoteProtocolError", "2"),
        ("ReadTimeout", "3"),
        ("200", "4"),
    ]
    # The timed-out attempt took about the 0.2 s timeout.
    assert 150 <= float(attempts(logs)[2]["ms"]) < 2000
    assert sdk_records(logs, logging.WARNING) == []
    assert_no_leaks(logs)


def test_refused_connection_logs_the_exception_name(face, logs):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = face.client(host=f"http://127.0.0.1:{port}", max_retries=1)
    assert client.track_lead(**LEAD)["type"] == "network_error"
    assert [(a["outcome"], a["n"]) for a in attempts(logs)] == [("ConnectError", "1"), ("ConnectError", "2")]
    assert len(sdk_records(logs, logging.WARNING)) == 1
    assert_no_leaks(logs)


# --- one WARNING when a call gives up ---------------------------------------------------------------------------------


def test_giving_up_after_retries_logs_one_warning(client, server, logs):
    server.default = Reply(status=503, body={"success": False, "error": "Service down", "type": "unavailable"})
    result = client.track_lead(**LEAD)
    assert result["status_code"] == 503
    assert [a["n"] for a in attempts(logs)] == ["1", "2", "3"]
    (warning,) = sdk_records(logs, logging.WARNING)
    message = warning.getMessage()
    assert "/track/lead" in message
    assert "3 attempt" in message
    assert "503" in message
    assert "unavailable" in message
    assert [r.levelno for r in sdk_records(logs)] == [logging.DEBUG] * 3 + [logging.WARNING]
    assert_no_leaks(logs)


def test_non_retryable_failure_logs_one_warning(client, server, logs):
    server.queue(Reply(status=422, body={"success": False, "error": "Validation failed", "type": "validation"}))
    assert client.track_sale(**SALE)["status_code"] == 422
    assert len(attempts(logs)) == 1
    (warning,) = sdk_records(logs, logging.WARNING)
    assert "1 attempt" in warning.getMessage()
    assert "422" in warning.getMessage()
    assert_no_leaks(logs)


def test_timeouts_to_the_end_log_one_warning(face, server, logs):
    client = face.client(host=server.url, timeout=0.2, max_retries=1)
    server.default = Reply(delay=0.3)
    assert client.track_lead(**LEAD)["type"] == "timeout"
    assert [a["outcome"] for a in attempts(logs)] == ["ReadTimeout", "ReadTimeout"]
    (warning,) = sdk_records(logs, logging.WARNING)
    assert "timeout" in warning.getMessage()
    assert_no_leaks(logs)


def test_retry_after_too_long_logs_one_warning(client, server, logs):
    server.queue(Reply(status=429, body=b"", headers={"Retry-After": "3600"}))
    assert client.track_lead(**LEAD)["status_code"] == 429
    assert len(attempts(logs)) == 1
    assert len(sdk_records(logs, logging.WARNING)) == 1


def test_validation_error_sends_and_logs_nothing_above_debug(client, server, logs):
    result = client.track_lead(**{**LEAD, "customer_email": "not-an-email " + EMAIL})
    assert result["type"] == "validation_error"
    assert server.requests == []
    assert [r for r in sdk_records(logs) if r.levelno > logging.DEBUG] == []
    assert_no_leaks(logs)


# --- secrets and personal data ---------------------------------------------------------------------------------------


def test_token_echoed_by_the_server_is_not_logged(client, server, caplog):
    # Every logger at DEBUG (httpx and httpcore too), and a server that echoes the Authorization header.
    caplog.set_level(logging.DEBUG)
    echo = {"success": False, "error": f"invalid credentials: Bearer {TOKEN}", "type": f"auth:{TOKEN}"}
    server.default = Reply(status=503, body=echo)
    result = client.track_lead(**LEAD)
    assert result["status_code"] == 503
    assert len(sdk_records(caplog, logging.WARNING)) == 1
    assert_no_leaks(caplog)


def test_nothing_logged_contains_the_token_on_any_path(face, server, caplog):
    caplog.set_level(logging.DEBUG)
    client = face.client(host=server.url, timeout=0.2)
    server.queue(
        Reply(status=500, body=b""),
        Reply(action="drop"),
        Reply(),
        Reply(status=401, body={"error": "bad token"}),
        Reply(status=200, body=b"<html>ok</html>"),
        Reply(status=302, body=b"", headers={"Location": "https://elsewhere.example/"}),
        Reply(action="truncate"),
        Reply(action="truncate"),
        Reply(action="truncate"),
    )
    for _ in range(5):
        client.track_lead(**LEAD)
    client.track_sale(**SALE)
    # 3 + 1 + 1 + 1 + 1 lead attempts (a 200 cut short is tracked), 1 sale
    assert len(server.requests) == 8
    assert len(sdk_records(caplog, logging.WARNING)) == 3
    assert_no_leaks(caplog)


def test_a_token_in_the_reason_phrase_or_echoed_headers_stays_out_of_httpx_and_httpcore_records(face, caplog):
    # httpx logs the reason phrase at INFO, httpcore the response headers at DEBUG: both are the server's words.
    caplog.set_level(logging.DEBUG)
    body = b'{"success": true}'
    answer = (
        f"HTTP/1.1 200 Bearer {TOKEN}\r\nX-Echo: Authorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    server = RawServer(answer)
    try:
        assert face.client(host=server.url).track_lead(**LEAD)["success"] is True
    finally:
        server.close()
    assert_no_leaks(caplog)
    (info,) = [record.getMessage() for record in caplog.records if record.name == "httpx"]
    assert info.endswith('"HTTP/1.1 200 Bearer [redacted]"')
    assert any("[redacted]" in record.getMessage() for record in caplog.records if record.name == "httpcore.http11")


def test_library_records_that_cannot_be_formatted_are_left_to_logging(face, monkeypatch):
    face.client()  # a live client: its token is being redacted from httpx's records
    httpx_logger = logging.getLogger("httpx")
    reported: list[logging.LogRecord] = []

    class Reporting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                self.format(record)
            except TypeError:
                reported.append(record)  # what logging's own handlers do: report, never raise to the caller

    handler = Reporting()
    monkeypatch.setattr(httpx_logger, "propagate", False)
    httpx_logger.addHandler(handler)
    try:
        httpx_logger.warning("%d requests", "not a number")  # logging reports it; it does not raise here
    finally:
        httpx_logger.removeHandler(handler)
    assert len(reported) == 1


def test_the_token_of_a_client_that_is_gone_is_no_longer_looked_for(face):
    tokens = [f"short-lived-token-{number:04d}" for number in range(50)]
    for token in tokens:
        face.client(token=token)
    face.close()
    face._clients.clear()
    gc.collect()
    assert not set(tokens) & set(_redaction._clients_per_token)


def test_a_client_collected_while_another_one_is_made_does_not_deadlock(monkeypatch):
    # The registry forgets a token in a weakref finalizer, which runs wherever the garbage collector does:
    # here, inside the registry's own locked section, in the thread that holds the lock.
    gone = CMSClient(token="collected-token-0001")
    cycle: list[object] = [gone]
    cycle.append(cycle)  # only the cyclic collector frees it
    del gone, cycle
    secret = _redaction._secret

    def collecting(token: str) -> object:
        gc.collect()
        return secret(token)

    made: list[CMSClient] = []
    gc.disable()  # the collection must happen where the test puts it
    try:
        monkeypatch.setattr(_redaction, "_secret", collecting)
        thread = threading.Thread(target=lambda: made.append(CMSClient(token="registering-token-0002")), daemon=True)
        thread.start()
        thread.join(timeout=30)  # a guard against hanging the run, not a measurement
        monkeypatch.undo()
    finally:
        gc.enable()
    assert made, "making a client deadlocked"
    CMSClient(token="next-token-0003")
    assert "collected-token-0001" not in _redaction._clients_per_token


@pytest.mark.parametrize(
    ("kind", "shown"),
    [
        ("x\r\n2024-01-01 CRITICAL forged line", "x\\x0d\\x0a2024-01-01 CRITICAL forged line"),
        ("a\u2028b\x85c", "a\\u2028b\\x85c"),
        ("\x1b[2J", "\\x1b[2J"),
        ("x\ud800", "x\\ud800"),
        ("\u202eevil", "\\u202eevil"),
    ],
)
def test_the_servers_error_type_cannot_forge_log_lines(client, server, logs, kind, shown):
    server.default = Reply(status=400, body={"success": False, "error": "bad", "type": kind})
    assert client.track_lead(**LEAD)["type"] == kind  # the result keeps the server's own words
    (warning,) = sdk_records(logs, logging.WARNING)
    assert warning.getMessage().endswith(f"type {shown}")


def test_request_values_echoed_by_the_server_stay_out_of_warnings(client, server, logs):
    server.default = Reply(status=409, body={"success": False, "error": f"customer {EMAIL} already exists"})
    assert client.track_lead(**LEAD)["status_code"] == 409
    assert len(sdk_records(logs, logging.WARNING)) == 1
    assert_no_leaks(logs)


def test_logger_has_a_null_handler_and_propagates():
    logger = logging.getLogger(LOGGER)
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)
    assert logger.propagate


FORGED = "bad\nCRITICAL cms_python: FORGED line"


@pytest.mark.parametrize("status", [422, 401])
def test_the_outbox_log_lines_escape_what_the_server_sent(server, logs, status):
    server.default = Reply(status=status, body={"success": False, "error": FORGED, "type": FORGED})
    with Outbox(":memory:", TOKEN, server.url, rate_limit=None) as outbox:
        outbox.track_lead(**LEAD)
        outbox.flush(timeout=10)
        outbox.close(timeout=0)
    outbox_lines = [r.getMessage() for r in sdk_records(logs) if "outbox" in r.getMessage()]
    assert outbox_lines, "the outbox logged nothing about the refusal"
    for record in sdk_records(logs):
        message = record.getMessage()
        assert message.isprintable(), message
        assert "\nCRITICAL" not in message


def test_every_logger_of_the_sdk_escapes_its_records():
    # Every record of the SDK goes through one escaping filter, attached where the SDK's loggers are made: a
    # module that made its own logger, or logged through the logging module itself, would bypass it.
    package = Path(cms_python.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "logging"
                and node.func.attr in {"getLogger", "debug", "info", "warning", "error", "exception", "critical", "log"}
                and path.name not in {"_printable.py", "_redaction.py"}
            ):
                offenders.append(f"{path.relative_to(package)}:{node.lineno}")
    assert not offenders, "use _printable.sdk_logger(): " + ", ".join(offenders)
    for name in ("cms_python", "cms_python.integrations"):
        record = logging.LogRecord(name, logging.WARNING, __file__, 1, "type %s", (FORGED,), None)
        assert logging.getLogger(name).filter(record)
        assert record.getMessage().isprintable()
