"""The retry table: what is retried, what is not, how long the SDK waits, and the Idempotency-Key of each attempt."""

from __future__ import annotations

import email.utils
import math
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from cms_python import _retry
from cms_python._requests import new_key

from ..conftest import LEAD, key_of
from ..support.servers import SUCCESS, Reply

# The values `_retry` ships with, read before any test patches them.
SHIPPED = (_retry.INITIAL_DELAY, _retry.MAX_DELAY, _retry.MAX_RETRY_AFTER)


def is_uuid4(text: str) -> bool:
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return False
    return parsed.version == 4 and str(parsed) == text


def error_body(message: str) -> dict:
    return {"success": False, "error": message, "type": "server_error"}


@pytest.fixture
def count_backoffs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records each `backoff(n)` call: one per retry that waited the plain backoff."""
    calls: list[int] = []
    real = _retry.backoff

    def spy(retry_number: int) -> float:
        calls.append(retry_number)
        return real(retry_number)

    monkeypatch.setattr(_retry, "backoff", spy)
    return calls


# --- retried: one failing attempt, then success ---------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_status_then_success(client, server, status):
    server.queue(Reply(status=status, body=error_body(f"failed with {status}")))
    result = client.track_lead(**LEAD)
    assert result == SUCCESS
    assert len(server.requests) == 2
    assert server.requests[0].body == server.requests[1].body


def test_connection_dropped_before_answer_is_retried(client, server):
    server.queue(Reply(action="drop"))
    result = client.track_lead(**LEAD)
    assert result == SUCCESS
    assert len(server.requests) == 2


def test_read_timeout_is_retried(face, server):
    client = face.client(host=server.url, timeout=0.2)
    server.queue(Reply(delay=0.3))
    result = client.track_lead(**LEAD)
    assert result == SUCCESS
    assert len(server.requests) == 2


def test_connect_refused_is_retried_then_network_error(face, closed_port, count_backoffs):
    client = face.client(host=f"http://127.0.0.1:{closed_port}")
    result = client.track_lead(**LEAD)
    assert result["success"] is False
    assert result["type"] == "network_error"
    assert result["status_code"] is None
    # max_retries=2: two waits between three attempts.
    assert count_backoffs == [0, 1]


def test_connect_refused_without_retries_tries_once(face, closed_port, count_backoffs):
    client = face.client(host=f"http://127.0.0.1:{closed_port}", max_retries=0)
    result = client.track_lead(**LEAD)
    assert result["type"] == "network_error"
    assert count_backoffs == []


# --- never retried -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 418, 422, 301])
def test_non_retryable_status_is_tried_once(client, server, status):
    headers = {"Location": "https://elsewhere.example/track/lead"} if status == 301 else {}
    server.queue(Reply(status=status, body=error_body(f"refused with {status}"), headers=headers))
    # The default reply is a success: a retry would turn the result into one.
    result = client.track_lead(**LEAD)
    assert result["success"] is False
    assert result["status_code"] == status
    assert result["error"] == f"refused with {status}"
    assert len(server.requests) == 1


def test_non_retryable_status_ignores_retry_after(client, server):
    server.queue(Reply(status=400, body=error_body("bad"), headers={"Retry-After": "0"}))
    result = client.track_lead(**LEAD)
    assert result["status_code"] == 400
    assert len(server.requests) == 1


# --- how many attempts, and which failure is reported ---------------------------------------------------------


def test_default_max_retries_is_two_and_last_failure_is_reported(client, server):
    server.queue(
        Reply(status=500, body=error_body("first")),
        Reply(status=503, body=error_body("second")),
        Reply(status=502, body={"success": False, "error": "third", "type": "bad_gateway"}),
    )
    result = client.track_lead(**LEAD)
    assert len(server.requests) == 3
    assert result == {
        "success": False,
        "error": "third",
        "status_code": 502,
        "type": "bad_gateway",
        "details": None,
    }


def test_last_failure_may_be_a_network_error(client, server):
    server.queue(Reply(status=503, body=error_body("busy")), Reply(status=503), Reply(action="drop"))
    result = client.track_lead(**LEAD)
    assert len(server.requests) == 3
    assert result["type"] == "network_error"
    assert result["status_code"] is None


def test_max_retries_zero_tries_once(face, server):
    client = face.client(host=server.url, max_retries=0)
    server.queue(Reply(status=503, body=error_body("busy")))
    result = client.track_lead(**LEAD)
    assert len(server.requests) == 1
    assert result["status_code"] == 503
    assert result["error"] == "busy"


def test_max_retries_five_tries_six_times(face, server):
    client = face.client(host=server.url, max_retries=5)
    server.default = Reply(status=500, body=error_body("down"))
    result = client.track_lead(**LEAD)
    assert len(server.requests) == 6
    assert result["status_code"] == 500


def test_sale_is_retried_like_a_lead(client, server):
    server.queue(Reply(status=502))
    result = client.track_sale(
        click_id="id_123",
        event_name="purchase_completed",
        customer_external_id="user_42",
        invoice_id="inv_987",
        amount=4999,
        currency="USD",
    )
    assert result == SUCCESS
    assert [r.path for r in server.requests] == ["/track/sale", "/track/sale"]


# --- Idempotency-Key --------------------------------------------------------------------------------------------


def test_idempotency_key_is_one_uuid4_for_all_attempts_of_a_call(client, server):
    server.queue(Reply(status=500), Reply(action="drop"))
    assert client.track_lead(**LEAD) == SUCCESS
    keys = [key_of(r) for r in server.requests]
    assert len(keys) == 3
    assert len(set(keys)) == 1
    assert is_uuid4(keys[0])


def test_a_made_key_is_a_uuid4_whose_122_random_bits_all_vary() -> None:
    keys = [new_key() for _ in range(2000)]
    assert all(is_uuid4(key) for key in keys)
    assert len(set(keys)) == len(keys)
    values = [uuid.UUID(key).int for key in keys]
    fixed = (0xF << 76) | (0x3 << 62)  # the version's 4 bits and the variant's 2
    varying = 0
    for value in values:
        varying |= value ^ values[0]
    assert varying == (2**128 - 1) & ~fixed


def test_idempotency_key_differs_between_calls(client, server):
    for _ in range(3):
        assert client.track_lead(**LEAD)["success"] is True
    keys = [key_of(r) for r in server.requests]
    assert len(set(keys)) == 3
    assert all(is_uuid4(k) for k in keys)


def test_callers_idempotency_key_is_used_as_is_on_every_attempt(client, server):
    server.queue(Reply(status=429), Reply(status=504))
    assert client.track_lead(**LEAD, idempotency_key="k-1") == SUCCESS
    assert [key_of(r) for r in server.requests] == ["k-1", "k-1", "k-1"]


def test_idempotency_key_survives_a_timeout(face, server):
    client = face.client(host=server.url, timeout=0.2)
    server.queue(Reply(delay=0.3))
    assert client.track_sale(
        event_name="purchase_completed",
        customer_external_id="user_42",
        invoice_id="inv_1",
        amount=1,
        currency="usd",
        idempotency_key="sale-inv_1",
    )["success"]
    assert [key_of(r) for r in server.requests] == ["sale-inv_1", "sale-inv_1"]


# --- Retry-After --------------------------------------------------------------------------------------------------


def gap(server) -> float:
    first, second = server.requests[:2]
    return second.at - first.at


def test_retry_after_seconds_is_waited(client, server, waits):
    server.queue(Reply(status=429, body=error_body("slow down"), headers={"Retry-After": "1"}))
    result = client.track_lead(**LEAD)
    assert result == SUCCESS
    assert len(server.requests) == 2
    assert waits == [1.0]
    assert gap(server) >= 0.9


def test_retry_after_http_date_is_waited(client, server, waits, monkeypatch):
    # HTTP-dates have whole seconds: 1.5 s ahead is between 0.5 s and 1.5 s ahead once truncated. The wait is
    # checked against the clock reading the SDK took when the answer came, not against when the test began: the
    # first exchange takes a while on a busy machine, and past 0.1 s a date truncated to 0.5 s ahead left < 0.4 s.
    readings: list[float] = []

    class Clock:  # this machine's wall clock, each reading kept
        @staticmethod
        def time() -> float:
            readings.append(time.time())
            return readings[-1]

    monkeypatch.setattr(_retry, "time", Clock)
    moment = datetime.now(timezone.utc) + timedelta(seconds=1.5)
    header = email.utils.format_datetime(moment, usegmt=True)
    server.queue(Reply(status=503, body=error_body("maintenance"), headers={"Retry-After": header}))
    result = client.track_lead(**LEAD)
    assert result == SUCCESS
    assert len(server.requests) == 2
    (wait,) = waits
    (read,) = readings
    assert wait == pytest.approx(max(0.0, moment.replace(microsecond=0).timestamp() - read), abs=1e-6)
    assert gap(server) >= wait - 0.001  # and waited


def test_retry_after_ms_is_waited(client, server):
    server.queue(Reply(status=429, body=error_body("slow down"), headers={"retry-after-ms": "50"}))
    result = client.track_lead(**LEAD)
    assert result == SUCCESS
    assert len(server.requests) == 2
    # Plain backoff is ~10 ms here: 50 ms means the header was read.
    assert gap(server) >= 0.045


def test_retry_after_ms_takes_precedence_over_retry_after(client, server, waits):
    server.queue(Reply(status=429, headers={"retry-after-ms": "20", "Retry-After": "3600"}))
    assert client.track_lead(**LEAD) == SUCCESS
    assert waits == [0.02]
    assert len(server.requests) == 2


def test_retry_after_zero_retries_at_once(client, server, waits):
    server.queue(Reply(status=503, headers={"Retry-After": "0"}), Reply(status=503, headers={"Retry-After": "0"}))
    assert client.track_lead(**LEAD) == SUCCESS
    assert len(server.requests) == 3
    assert waits == [0.0, 0.0]


@pytest.mark.parametrize("value", ["3600", "61", "86400000"])
def test_retry_after_beyond_the_limit_gives_up_at_once(client, server, value, waits):
    server.queue(Reply(status=429, body=error_body("come back tomorrow"), headers={"Retry-After": value}))
    result = client.track_lead(**LEAD)
    assert waits == []
    assert len(server.requests) == 1
    assert result == {
        "success": False,
        "error": "come back tomorrow",
        "status_code": 429,
        "type": "server_error",
        "details": None,
    }


def test_retry_after_date_far_ahead_gives_up_at_once(client, server, waits):
    header = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(hours=2), usegmt=True)
    server.queue(Reply(status=503, headers={"Retry-After": header}))
    result = client.track_lead(**LEAD)
    assert waits == []
    assert len(server.requests) == 1
    assert result["status_code"] == 503


@pytest.mark.parametrize("value", ["soon", "", "-5", "nan", "inf", "Mon, 99 Foo 2024 99:99:99 GMT", "0_1"])
def test_unusable_retry_after_falls_back_to_backoff(client, server, value, waits):
    server.queue(Reply(status=503, headers={"Retry-After": value}))
    assert client.track_lead(**LEAD) == SUCCESS
    assert len(server.requests) == 2
    (wait,) = waits
    assert wait <= 0.01  # the tests' plain backoff


# --- unit: backoff ----------------------------------------------------------------------------------------------


@pytest.mark.shipped_backoff
def test_shipped_constants():
    assert SHIPPED == (0.5, 8.0, 60.0)
    assert frozenset({408, 429, 500, 502, 503, 504}) == _retry.RETRYABLE_STATUSES


@pytest.mark.shipped_backoff
@pytest.mark.parametrize(("retry_number", "base"), [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0)])
def test_backoff_doubles_then_caps_with_at_most_25_percent_jitter(retry_number, base):
    samples = [_retry.backoff(retry_number) for _ in range(300)]
    assert all(0.75 * base <= d <= base for d in samples)
    # Jitter: the waits are spread out, not one value.
    assert len(set(samples)) > 1
    assert max(samples) - min(samples) > 0.05 * base


@pytest.mark.shipped_backoff
@pytest.mark.parametrize("retry_number", [10, 60, 1000])
def test_backoff_stays_capped_for_large_retry_numbers(retry_number):
    assert 6.0 <= _retry.backoff(retry_number) <= 8.0


@pytest.mark.shipped_backoff
def test_backoff_jitter_bounds_exactly(monkeypatch):
    monkeypatch.setattr(_retry.random, "random", lambda: 0.0)
    assert _retry.backoff(2) == 2.0
    monkeypatch.setattr(_retry.random, "random", lambda: 1.0)
    assert _retry.backoff(2) == 1.5


# --- unit: retry_after ------------------------------------------------------------------------------------------


def headers(**values: str) -> httpx.Headers:
    return httpx.Headers({name.replace("_", "-"): value for name, value in values.items()})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, None),
        ({"retry_after": "1"}, 1.0),
        ({"retry_after": "0"}, 0.0),
        ({"retry_after": "2.5"}, 2.5),
        ({"retry_after": " 7 "}, 7.0),
        ({"retry_after": "3600"}, 3600.0),
        ({"retry_after": "-5"}, 0.0),
        ({"retry_after": "nan"}, None),
        ({"retry_after": "NaN"}, None),
        ({"retry_after": "inf"}, None),
        ({"retry_after": "-inf"}, None),
        ({"retry_after": "1e400"}, None),
        ({"retry_after": "garbage"}, None),
        ({"retry_after": ""}, None),
        ({"retry_after": "Mon, 99 Foo 2024 99:99:99 GMT"}, None),
        # What float() reads but the header's grammar (digits) does not have.
        ({"retry_after": "0_1"}, None),
        ({"retry_after": "1_000"}, None),
        ({"retry_after": "1e1"}, None),
        ({"retry_after_ms": "5_0", "retry_after": "2"}, 2.0),
        ({"retry_after_ms": "50"}, 0.05),
        ({"retry_after_ms": "0"}, 0.0),
        ({"retry_after_ms": "-10"}, 0.0),
        ({"retry_after_ms": "1500", "retry_after": "9"}, 1.5),
        ({"retry_after_ms": "nan", "retry_after": "9"}, 9.0),
        ({"retry_after_ms": "garbage", "retry_after": "2"}, 2.0),
        ({"retry_after_ms": "garbage"}, None),
    ],
)
def test_retry_after_values(values, expected):
    result = _retry.retry_after(headers(**values))
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_retry_after_digits_are_ascii_digits():
    # A server's UTF-8 header bytes decode to str; int() and float() would read ARABIC-INDIC DIGIT THREE as 3.
    assert _retry.retry_after(httpx.Headers({"retry-after": "\u0663".encode()})) is None


def test_retry_after_header_names_are_case_insensitive():
    assert _retry.retry_after(httpx.Headers({"RETRY-AFTER": "3"})) == 3.0
    assert _retry.retry_after(httpx.Headers({"Retry-After-Ms": "250"})) == pytest.approx(0.25)


def test_retry_after_http_date_in_the_future():
    moment = datetime.now(timezone.utc) + timedelta(seconds=30)
    wait = _retry.retry_after(headers(retry_after=email.utils.format_datetime(moment, usegmt=True)))
    assert wait is not None
    assert 28 <= wait <= 30.5


def test_retry_after_http_date_in_the_past_means_now():
    moment = datetime.now(timezone.utc) - timedelta(hours=1)
    assert _retry.retry_after(headers(retry_after=email.utils.format_datetime(moment, usegmt=True))) == 0.0


def test_retry_after_is_always_a_finite_non_negative_float_or_none():
    for value in [
        "1",
        "-1",
        "1e308",
        "0x10",
        "1_000",
        "  ",
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ]:
        wait = _retry.retry_after(headers(retry_after=value))
        assert wait is None or (isinstance(wait, float) and math.isfinite(wait) and wait >= 0), value


def test_a_retry_after_date_beyond_any_calendar_is_ignored(face, server):
    server.queue(Reply(status=503, body=b"", headers={"Retry-After": "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"}))
    result = face.client(host=server.url).track_lead(**LEAD)
    assert result["success"] is True
    assert len(server.requests) == 2
