"""Every outbox behaviour, on each store (`new_target`: a file, a PostgreSQL database): queueing, delivery
outcomes, order, pacing, limits, claims between outboxes, the lifecycle.

Most tests deliver to the sandbox (in-process transport) and drive time with `FakeClock`, so that backoffs,
Retry-After and pacing are checked exactly and take no real time; one pacing test uses real time.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from cms_python import CMSClient, FailedEvent, Outbox
from cms_python._outbox.delivery import MAX_BACKOFF
from cms_python.testing import SANDBOX_HOST, SANDBOX_TOKEN, Sandbox

from ..conftest import LEAD, SALE, TOKEN
from ..support.clock import FakeClock
from ..support.servers import LoopbackServer, Reply
from ..support.waits import wait_until
from .conftest import Recorder, lead, sale

# -- queueing ---------------------------------------------------------------------------------------------------


def test_a_queued_event_is_acknowledged_then_delivered_with_its_key(make, cms_sandbox: Sandbox) -> None:
    outbox, _ = make()
    result = outbox.track_sale(**sale())
    assert result == {
        "success": True,
        "message": "Event queued",
        "data": {"event_id": result["data"]["event_id"], "idempotency_key": result["data"]["idempotency_key"],
                 "duplicate": False},
    }  # fmt: skip
    assert outbox.flush(timeout=10) is True
    (request,) = cms_sandbox.requests
    assert request.idempotency_key == result["data"]["idempotency_key"]
    assert cms_sandbox.sales[0].invoice_id == "inv_987"
    assert outbox.stats() == {"pending": 0, "failed": 0, "delivered": 1, "paused": False}


def test_time_is_fixed_at_enqueue_and_kept_when_given(make, cms_sandbox: Sandbox) -> None:
    outbox, _ = make()
    before = datetime.now(timezone.utc)
    outbox.track_lead(**lead(customer_external_id="a"))
    after = datetime.now(timezone.utc)
    given = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    outbox.track_lead(**lead(customer_external_id="b", timestamp=given))
    assert outbox.flush(timeout=10)
    stamped, kept = (datetime.fromisoformat(request.json["timestamp"]) for request in cms_sandbox.requests)
    assert before <= stamped <= after
    assert kept == given


def test_invalid_values_store_nothing(make) -> None:
    outbox, _ = make()
    result = outbox.track_sale(**sale(amount=49.99))
    assert result["type"] == "validation_error"
    assert result["details"] == {"amount": "must be an int number of cents, got float"}
    assert outbox.stats()["pending"] == 0


def test_the_same_key_and_content_is_stored_once(make, cms_sandbox: Sandbox) -> None:
    outbox, _ = make()
    first = outbox.track_lead(**lead(idempotency_key="signup-42"))
    again = outbox.track_lead(**lead(idempotency_key="signup-42"))  # a new stamped time does not count
    assert again == {
        "success": True,
        "message": "Event already queued",
        "data": {"event_id": first["data"]["event_id"], "idempotency_key": "signup-42", "duplicate": True},
    }
    assert outbox.flush(timeout=10)
    assert len(cms_sandbox.requests) == 1
    after_delivery = outbox.track_lead(**lead(idempotency_key="signup-42"))  # remembered once delivered
    assert after_delivery["data"]["duplicate"] is True
    assert outbox.stats()["pending"] == 0


def test_the_same_key_with_other_content_is_refused(make) -> None:
    outbox, _ = make()
    first = outbox.track_lead(**lead(idempotency_key="signup-42"))
    other = outbox.track_lead(**lead(idempotency_key="signup-42", event_name="other"))
    assert other["success"] is False
    assert (other["type"], other["status_code"]) == ("idempotency_key_reused", None)
    assert other["details"]["event_id"] == first["data"]["event_id"]
    assert outbox.track_sale(**sale(idempotency_key="signup-42"))["type"] == "idempotency_key_reused"


def test_a_full_outbox_refuses_with_a_warning(new_target: Callable[[], str], caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 9: every attempt fails, so events stay pending.
    with Outbox(new_target(), TOKEN, "http://127.0.0.1:9", max_pending=2) as outbox:
        assert outbox.track_lead(**lead(customer_external_id="a"))["success"]
        assert outbox.track_lead(**lead(customer_external_id="b", idempotency_key="b"))["success"]
        with caplog.at_level(logging.WARNING, logger="cms_python"):
            full = outbox.track_lead(**lead(customer_external_id="c"))
        assert (full["success"], full["type"], full["status_code"]) == (False, "outbox_full", None)
        assert "full" in caplog.text
        assert outbox.track_lead(**lead(customer_external_id="b", idempotency_key="b"))["data"]["duplicate"]
        assert outbox.stats()["pending"] == 2
        outbox.close(timeout=0)


# -- delivery outcomes ------------------------------------------------------------------------------------------


@pytest.mark.shipped_backoff
def test_retryable_failures_stay_queued_and_are_sent_again_under_the_same_key(make, cms_sandbox: Sandbox) -> None:
    outbox, clock = make()
    recorder = Recorder(outbox, clock)
    cms_sandbox.fail_next(503, times=3)
    key = outbox.track_lead(**LEAD)["data"]["idempotency_key"]
    assert outbox.flush(timeout=10)
    assert [request.status for request in cms_sandbox.requests] == [503, 503, 503, 200]
    assert {request.idempotency_key for request in cms_sandbox.requests} == {key}
    gaps = [b - a for a, b in itertools.pairwise(recorder.times())]
    assert len(gaps) == 3
    assert all(gap >= 0.75 for gap in gaps)  # backoff from 1 s (less up to 25% jitter), doubling
    assert outbox.stats() == {"pending": 0, "failed": 0, "delivered": 1, "paused": False}


@pytest.mark.shipped_backoff
def test_backoff_is_capped_at_five_minutes(new_target: Callable[[], str]) -> None:
    with Outbox(new_target(), TOKEN, "http://127.0.0.1:9", rate_limit=None) as outbox:
        clock = FakeClock()
        outbox._settings.clock = clock
        recorder = Recorder(outbox, clock)
        outbox.track_lead(**LEAD)
        wait_until(lambda: len(recorder.attempts) >= 14, what="14 attempts")
        times = recorder.times()
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) <= MAX_BACKOFF + 1
        assert gaps[-1] >= 0.75 * MAX_BACKOFF
        outbox.close(timeout=0)


def test_retry_after_is_honoured(make, cms_sandbox: Sandbox) -> None:
    outbox, clock = make()
    recorder = Recorder(outbox, clock)
    cms_sandbox.fail_next(429, retry_after=7)
    outbox.track_lead(**lead(customer_external_id="a"))
    outbox.track_lead(**lead(customer_external_id="b"))
    assert outbox.flush(timeout=10)
    first, *later = recorder.times()
    assert min(later) - first == 7  # nothing at all is sent before the wait the server asked for
    assert outbox.stats()["delivered"] == 2


def test_a_permanent_refusal_fails_the_event_and_calls_on_failure(make, cms_sandbox: Sandbox) -> None:
    calls: list[tuple[FailedEvent, dict[str, Any]]] = []
    outbox, _ = make(on_failure=lambda event, result: calls.append((event, result)))
    cms_sandbox.fail_next(422)
    key = outbox.track_sale(**sale(customer_email="jane@example.com"))["data"]["idempotency_key"]
    assert outbox.flush(timeout=10)
    ((event, result),) = calls
    assert (event.kind, event.idempotency_key) == ("sale", key)
    assert (result["status_code"], result["type"]) == (422, "sandbox_fault")
    assert event.result == result
    assert event.arguments == {
        **SALE,
        "customer_email": "jane@example.com",
        "timestamp": event.arguments["timestamp"],
    }
    assert outbox.failed() == [event]
    assert outbox.stats() == {"pending": 0, "failed": 1, "delivered": 0, "paused": False}
    assert outbox.retry_failed() == 1
    assert outbox.flush(timeout=10)
    assert outbox.stats() == {"pending": 0, "failed": 0, "delivered": 1, "paused": False}
    assert [request.idempotency_key for request in cms_sandbox.requests] == [key, key]


@pytest.mark.parametrize("raised", [RuntimeError, SystemExit, KeyboardInterrupt])
def test_an_exception_in_on_failure_is_logged_and_delivery_goes_on(
    make, cms_sandbox: Sandbox, caplog: pytest.LogCaptureFixture, raised: type[BaseException]
) -> None:
    def broken(event: FailedEvent, result: dict[str, Any]) -> None:
        raise raised("bug in the callback")

    outbox, _ = make(on_failure=broken)
    cms_sandbox.fail_next(400)
    outbox.track_lead(**lead(customer_external_id="a"))
    outbox.track_lead(**lead(customer_external_id="b"))
    with caplog.at_level(logging.ERROR, logger="cms_python"):
        assert outbox.flush(timeout=10)
    assert "on_failure raised" in caplog.text
    assert "bug in the callback" in caplog.text  # the traceback
    assert outbox.stats() == {"pending": 0, "failed": 1, "delivered": 1, "paused": False}
    assert outbox.purge_failed() == 1
    assert outbox.stats()["failed"] == 0


def test_a_409_duplicate_invoice_counts_as_delivered(make, cms_sandbox: Sandbox) -> None:
    with cms_sandbox.client() as client:
        assert client.track_sale(**sale(amount=100))["success"]  # the invoice is recorded already
    outbox, _ = make()
    outbox.track_sale(**sale(amount=200))
    outbox.track_lead(**lead(customer_external_id="deferred", mode="deferred"))
    outbox.track_lead(**lead(customer_external_id="deferred"))  # 409 duplicate_attribution: a real failure
    assert outbox.flush(timeout=10)
    assert [request.response["type"] for request in cms_sandbox.requests if request.status == 409] == [
        "duplicate_invoice",
        "duplicate_attribution",
    ]
    assert outbox.stats() == {"pending": 0, "failed": 1, "delivered": 2, "paused": False}
    assert outbox.failed()[0].result["type"] == "duplicate_attribution"


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_pause_delivery_until_resume(
    make, cms_sandbox: Sandbox, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    outbox, _ = make()
    cms_sandbox.fail_next(status)
    with caplog.at_level(logging.WARNING, logger="cms_python"):
        for customer in "abc":
            outbox.track_lead(**lead(customer_external_id=customer))
        wait_until(lambda: outbox.stats()["paused"], what="the pause")
        assert outbox.flush(timeout=30) is False
    # At once, saying why: the timeout is not what ended it.
    assert "flush() returns False: delivery is paused" in caplog.text
    assert outbox.stats() == {"pending": 3, "failed": 0, "delivered": 0, "paused": True}
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "paused" in errors[0].getMessage()
    assert len(cms_sandbox.requests) == 1
    outbox.resume()
    assert outbox.flush(timeout=10) is True
    assert outbox.stats() == {"pending": 0, "failed": 0, "delivered": 3, "paused": False}


def test_max_age_expires_undelivered_events(new_target: Callable[[], str]) -> None:
    expired: list[FailedEvent] = []
    with Outbox(
        new_target(), TOKEN, "http://127.0.0.1:9", rate_limit=None, max_age=600,
        on_failure=lambda event, result: expired.append(event),
    ) as outbox:  # fmt: skip
        outbox._settings.clock = FakeClock()
        outbox.track_lead(**LEAD)
        assert outbox.flush(timeout=10)
        (event,) = expired
        assert event.result["type"] == "expired"
        assert event.result["details"]["last_result"]["type"] == "network_error"
        assert event.result["details"]["attempts"] >= 5
        assert outbox.stats()["failed"] == 1


# -- order and pacing -------------------------------------------------------------------------------------------


class FailKey(httpx.BaseTransport):
    """The sandbox, but the requests with one idempotency key get a 503 the first `times` times; no request is
    answered before `gate` is set."""

    def __init__(self, sandbox: Sandbox, key: str, times: int) -> None:
        self._inner = sandbox.transport()
        self._key = key
        self.left = times
        self.gate = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.gate.wait(10)
        if request.headers.get("idempotency-key") == self._key and self.left:
            self.left -= 1
            return httpx.Response(503, json={"success": False, "error": "down", "type": "unavailable"})
        return self._inner.handle_request(request)


def test_a_customer_s_events_arrive_in_order_while_others_go_ahead(make, cms_sandbox: Sandbox) -> None:
    transport = FailKey(cms_sandbox, "a-1", times=3)
    with CMSClient(TOKEN, SANDBOX_HOST, http_client=httpx.Client(transport=transport)) as client:
        outbox, _ = make(client=client)
        outbox.track_lead(**lead(customer_external_id="a", idempotency_key="a-1", mode="deferred"))
        for number in range(2, 5):
            outbox.track_lead(event_name=f"step{number}", customer_external_id="a", idempotency_key=f"a-{number}")
        for number in range(1, 6):
            outbox.track_lead(**lead(customer_external_id=f"other{number}", idempotency_key=f"b-{number}"))
        transport.gate.set()  # everything is queued: a-1 fails, and the others' turn comes while it waits
        assert outbox.flush(timeout=10)
    assert transport.left == 0
    delivered = [request.idempotency_key for request in cms_sandbox.requests if request.status == 200]
    assert [key for key in delivered if key.startswith("a-")] == ["a-1", "a-2", "a-3", "a-4"]
    assert delivered.index("b-5") < delivered.index("a-1")  # the others were not held up by a-1's retries
    assert [lead.click_id_source for lead in cms_sandbox.leads if lead.customer_external_id == "a"] == [
        "request", "association", "association", "association",
    ]  # fmt: skip


def test_pacing_spreads_requests_evenly(make, cms_sandbox: Sandbox) -> None:
    outbox, clock = make(rate_limit=60)
    recorder = Recorder(outbox, clock)
    for number in range(6):
        outbox.track_lead(**lead(customer_external_id=f"c{number}"))
    assert outbox.flush(timeout=10)
    times = recorder.times()
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [1.0] * 5


def test_pacing_in_real_time(make, cms_sandbox: Sandbox) -> None:
    outbox, _ = make(rate_limit=600, real_time=True)  # one request every 0.1 s
    clock = outbox._settings.clock  # the store's own: the time line its sending slots are on
    recorder = Recorder(outbox, clock)
    slots: list[tuple[float, int]] = []  # the time each claim that took events was made at, and how many it took
    claim = outbox._store.claim

    def recording(owner: str, now: float, limit: int, interval: float | None) -> Any:
        claimed = claim(owner, now, limit, interval)
        if claimed.events:
            slots.append((now, len(claimed.events)))
        return claimed

    outbox._store.claim = recording  # type: ignore[method-assign]
    started = time.monotonic()
    for number in range(6):
        outbox.track_lead(**lead(customer_external_id=f"c{number}"))
    assert outbox.flush(timeout=10)
    times = recorder.times()
    assert [taken for _, taken in slots] == [1] * 6  # one event a slot
    # A request goes out once its slot is claimed, after the previous slot's 0.1 s. Not the gaps between the
    # requests themselves: what comes between a claim and its request (recording the previous delivery, the
    # claim's transaction, a busy machine) delays one request more than the next: gaps down to 0.01 s under load.
    assert all(sent - previous >= 0.1 - 1e-6 for (previous, _), sent in zip(slots, times[1:], strict=False))
    assert time.monotonic() - started < 5  # spread, not stalled


# -- between outboxes -------------------------------------------------------------------------------------------


def test_events_left_in_the_store_are_delivered_by_the_next_outbox(
    make, cms_sandbox: Sandbox, new_target: Callable[[], str]
) -> None:
    path = new_target()
    # The API is unreachable; the same token as the sandbox's client (a database keeps each token's apart).
    with Outbox(path, SANDBOX_TOKEN, "http://127.0.0.1:9") as down:
        key = down.track_sale(**SALE)["data"]["idempotency_key"]
        down.close(timeout=0)
    outbox, _ = make(path)  # starts delivering at once: the file holds a pending event
    assert outbox.flush(timeout=10)
    assert [request.idempotency_key for request in cms_sandbox.requests] == [key]


def test_claims_are_released_at_close_but_that_of_the_event_on_the_wire(new_target: Callable[[], str]) -> None:
    # Two outboxes on one file are two claim owners. The first claims a batch, sends its first event to an API
    # that hangs, and closes without waiting: the second must get the rest of the batch at once, not after the
    # first's leases run out, and must not send the event on the wire.
    server = LoopbackServer()
    server.queue(Reply(delay=5))
    path = new_target()
    try:
        first = Outbox(path, TOKEN, server.url, rate_limit=None)
        for number in range(10):
            first.track_lead(**lead(customer_external_id=f"c{number}", idempotency_key=f"k{number}"))
        wait_until(lambda: server.requests, what="the first request")
        first.close(timeout=0)
        with Outbox(path, TOKEN, server.url, rate_limit=None) as second:
            # Well before the first's 60 s leases would run out.
            wait_until(lambda: len(server.requests) >= 10, what="the other nine events")
            second.close(timeout=0)
        keys = [request.headers["Idempotency-Key"] for request in server.requests]
        assert sorted(keys) == sorted(f"k{number}" for number in range(10))
    finally:
        server.close()


# -- lifecycle --------------------------------------------------------------------------------------------------


def test_flush_times_out_when_the_api_is_down(new_target: Callable[[], str]) -> None:
    with Outbox(new_target(), TOKEN, "http://127.0.0.1:9") as outbox:
        outbox.track_lead(**LEAD)
        assert outbox.flush(timeout=0.2) is False
        assert outbox.stats()["pending"] == 1
        outbox.close(timeout=0)


def test_a_closed_outbox_refuses_calls(make) -> None:
    outbox, _ = make()
    outbox.close()
    outbox.close()
    with pytest.raises(RuntimeError, match="closed"):
        outbox.track_lead(**LEAD)
    with pytest.raises(RuntimeError, match="closed"):
        outbox.flush()


def test_repr_and_logs_never_show_the_token(new_target: Callable[[], str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    outbox = Outbox(new_target(), TOKEN, "http://127.0.0.1:9")
    outbox.track_lead(**LEAD)
    outbox.flush(timeout=0.1)
    assert TOKEN not in repr(outbox)
    outbox.close(timeout=0)
    assert TOKEN not in caplog.text


def test_flush_from_on_failure_raises_instead_of_waiting_for_itself(
    make, cms_sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    outboxes: list[Outbox] = []
    outbox, _ = make(on_failure=lambda event, result: outboxes[0].flush())
    outboxes.append(outbox)
    cms_sandbox.fail_next(400)
    outbox.track_lead(**lead(customer_external_id="a"))
    outbox.track_lead(**lead(customer_external_id="b"))
    with caplog.at_level(logging.ERROR, logger="cms_python"):
        assert outbox.flush(timeout=10)
    assert "its own thread" in caplog.text
    assert outbox.stats()["delivered"] == 1


def test_event_ids_are_never_given_twice(make, cms_sandbox: Sandbox) -> None:
    outbox, _ = make()
    delivered = outbox.track_lead(**lead(customer_external_id="a"))["data"]["event_id"]
    assert outbox.flush(timeout=10)
    cms_sandbox.fail_next(422)
    purged = outbox.track_lead(**lead(customer_external_id="b"))["data"]["event_id"]
    assert outbox.flush(timeout=10)
    assert outbox.purge_failed() == 1  # the newest row is gone too: its id must not come back
    later = outbox.track_lead(**lead(customer_external_id="c"))["data"]["event_id"]
    assert int(delivered) < int(purged) < int(later)


def test_close_keeps_the_claims_of_events_already_delivered(new_target: Callable[[], str]) -> None:
    # Unpaced, one claim covers a batch. The first outbox delivers five events of it, then its sixth request
    # hangs, and it closes without waiting: the five must not be sent again by the second outbox on the file.
    server = LoopbackServer()
    server.queue(*[Reply()] * 5, Reply(delay=3))
    path = new_target()
    try:
        first = Outbox(path, TOKEN, server.url, rate_limit=None)
        for number in range(20):
            first.track_lead(**lead(customer_external_id=f"c{number}", idempotency_key=f"k{number}"))
        wait_until(lambda: len(server.requests) >= 6, what="six requests")
        first.close(timeout=0)
        with Outbox(path, TOKEN, server.url, rate_limit=None) as second:
            assert second.flush(timeout=20)
        keys = [request.headers["Idempotency-Key"] for request in server.requests]
        assert sorted(keys) == sorted(f"k{number}" for number in range(20)), "some events were sent twice"
    finally:
        server.close()


def test_a_wall_clock_stepped_back_does_not_stall_pacing(make, cms_sandbox: Sandbox) -> None:
    outbox, clock = make(rate_limit=60)
    recorder = Recorder(outbox, clock)
    outbox.track_lead(**lead(customer_external_id="a"))
    assert outbox.flush(timeout=10)
    clock.time -= 900  # NTP steps the clock back 15 minutes
    stepped_at = clock.time
    outbox.track_lead(**lead(customer_external_id="b"))
    assert outbox.flush(timeout=10)
    _, second = recorder.times()
    # A pace of one second waited for at most twice (once after the first send), not the 900 s of the step.
    assert second - stepped_at <= 2.0
