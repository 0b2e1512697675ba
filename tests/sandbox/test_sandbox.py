"""The sandbox's rules, through the public SDK (both faces, over the in-process transports), through raw HTTP
requests for what the SDK never sends, and through the loopback HTTP server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from cms_python import CMSClient
from cms_python.testing import SANDBOX_HOST, SANDBOX_TOKEN, Account, ClickSummary, Sandbox
from cms_python.testing._server import SandboxServer

from ..conftest import Face, FaceClient
from ..support.servers import has_ipv6_loopback

LEAD_BODY = {"eventName": "signup_started", "customerExternalId": "user_42", "clickId": "id_123"}
SALE_BODY = {
    "eventName": "purchase_completed",
    "customerExternalId": "user_42",
    "invoiceId": "inv_1",
    "amount": 4999,
    "currency": "USD",
    "clickId": "id_123",
}
SDK_SALE: dict[str, Any] = {
    "event_name": "purchase_completed",
    "customer_external_id": "user_42",
    "invoice_id": "inv_1",
    "amount": 4999,
    "currency": "USD",
}


class Clock:
    """A fake monotonic clock for the rate limit."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sdk(face: Face, cms_sandbox: Sandbox) -> Iterator[FaceClient]:
    """The SDK client of the face under test (sync or async), wired to `cms_sandbox` in-process."""
    raw = cms_sandbox.async_client() if face.kind == "async" else cms_sandbox.client()
    yield FaceClient(raw, face.run)
    face.run(raw.aclose()) if face.kind == "async" else raw.close()


@pytest.fixture
def http(cms_sandbox: Sandbox) -> Iterator[httpx.Client]:
    """A plain httpx client over the sandbox's transport, for requests the SDK would refuse to send."""
    with httpx.Client(
        transport=cms_sandbox.transport(), base_url=SANDBOX_HOST, headers={"Authorization": "Bearer t"}
    ) as client:
        yield client


def error_body(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["statusCode"] == response.status_code
    assert isinstance(body["error"], str)
    assert isinstance(body["type"], str)
    return body


# -- leads and deferred attribution ---------------------------------------------------------------------------


def test_standard_lead_is_recorded_and_answered_in_the_documented_shape(sdk, cms_sandbox):
    when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    result = sdk.track_lead(
        click_id="id_123",
        event_name="signup_started",
        customer_external_id="user_42",
        customer_name="Jane Doe",
        customer_email="jane@example.com",
        customer_avatar="https://example.com/jane.png",
        timestamp=when,
    )
    assert result["success"] is True
    assert result["message"] == "Event tracked successfully"
    (lead,) = cms_sandbox.leads
    assert result["data"] == {
        "id": lead.id,
        "type": "lead",
        "eventName": "signup_started",
        "customerExternalId": "user_42",
        "clickId": "id_123",
        "clickIdSource": "request",
        "deferred": False,
        "timestamp": "2024-05-01T12:00:00+00:00",
        "replayed": False,
    }
    assert (lead.click_id, lead.click_id_source, lead.deferred) == ("id_123", "request", False)
    assert lead.payload == {
        "clickId": "id_123",
        "eventName": "signup_started",
        "customerExternalId": "user_42",
        "customerName": "Jane Doe",
        "customerEmail": "jane@example.com",
        "customerAvatar": "https://example.com/jane.png",
        "timestamp": "2024-05-01T12:00:00+00:00",
    }
    assert cms_sandbox.associations == {}  # a standard lead stores no association


def test_the_server_sets_the_timestamp_when_absent(sdk, cms_sandbox):
    before = datetime.now(timezone.utc)
    sdk.track_lead(click_id="id_123", event_name="signup_started", customer_external_id="user_42")
    (lead,) = cms_sandbox.leads
    assert before <= datetime.fromisoformat(lead.timestamp.replace("Z", "+00:00")) <= datetime.now(timezone.utc)


def test_deferred_lead_stores_the_association_and_later_events_resolve_through_it(sdk, cms_sandbox):
    first = sdk.track_lead(
        click_id="id_123", event_name="lead_captured", customer_external_id="user_42", mode="deferred"
    )
    later = sdk.track_lead(event_name="kyc_completed", customer_external_id="user_42")
    assert first["success"]
    assert later["success"]
    assert first["data"]["deferred"] is True
    assert (later["data"]["clickId"], later["data"]["clickIdSource"]) == ("id_123", "association")
    assert cms_sandbox.associations == {"user_42": "id_123"}
    deferred, resolved = cms_sandbox.leads
    assert (deferred.deferred, deferred.click_id_source, deferred.payload["mode"]) == (True, "request", "deferred")
    assert (resolved.click_id, resolved.click_id_source, "clickId" in resolved.payload) == (
        "id_123",
        "association",
        False,
    )


@pytest.mark.parametrize("mode", [None, "deferred"])
def test_click_id_again_after_a_deferred_lead_is_a_duplicate_attribution(sdk, cms_sandbox, mode):
    sdk.track_lead(click_id="id_123", event_name="lead_captured", customer_external_id="user_42", mode="deferred")
    result = sdk.track_lead(click_id="id_123", event_name="kyc_completed", customer_external_id="user_42", mode=mode)
    assert result["success"] is False
    assert (result["status_code"], result["type"]) == (409, "duplicate_attribution")
    assert len(cms_sandbox.leads) == 1
    assert cms_sandbox.associations == {"user_42": "id_123"}


def test_lead_without_click_id_or_association_is_refused(sdk, cms_sandbox):
    # Another customer's association does not count.
    sdk.track_lead(click_id="id_123", event_name="lead_captured", customer_external_id="user_1", mode="deferred")
    result = sdk.track_lead(event_name="kyc_completed", customer_external_id="user_42")
    assert (result["success"], result["status_code"], result["type"]) == (False, 400, "missing_click_id")
    assert "clickId" in result["error"]
    assert len(cms_sandbox.leads) == 1


def test_deferred_mode_without_click_id_is_refused(http, cms_sandbox):
    response = http.post("/track/lead", json={"eventName": "e", "customerExternalId": "u", "mode": "deferred"})
    assert response.status_code == 400
    assert error_body(response)["type"] == "missing_click_id"
    assert cms_sandbox.leads == []
    assert cms_sandbox.associations == {}


# -- sales ----------------------------------------------------------------------------------------------------


def test_sale_with_click_id_is_recorded(sdk, cms_sandbox):
    result = sdk.track_sale(click_id="id_123", customer_email="jane@example.com", **SDK_SALE)
    assert result["success"] is True
    assert result["data"]["replayed"] is False
    (sale,) = cms_sandbox.sales
    assert (sale.invoice_id, sale.amount, sale.currency, sale.click_id) == ("inv_1", 4999, "USD", "id_123")
    assert sale.payload == {
        "eventName": "purchase_completed",
        "customerExternalId": "user_42",
        "invoiceId": "inv_1",
        "amount": 4999,
        "currency": "USD",
        "clickId": "id_123",
        "customerEmail": "jane@example.com",
    }
    assert result["data"]["id"] == sale.id


def test_sale_without_click_id_resolves_through_the_deferred_association(sdk, cms_sandbox):
    sdk.track_lead(click_id="id_123", event_name="lead_captured", customer_external_id="user_42", mode="deferred")
    result = sdk.track_sale(**SDK_SALE)
    assert (result["data"]["clickId"], result["data"]["clickIdSource"]) == ("id_123", "association")
    assert (cms_sandbox.sales[0].click_id, cms_sandbox.sales[0].click_id_source) == ("id_123", "association")


def test_sale_without_click_id_or_association_is_refused(sdk, cms_sandbox):
    result = sdk.track_sale(**SDK_SALE)
    assert (result["success"], result["status_code"], result["type"]) == (False, 400, "missing_click_id")
    assert cms_sandbox.sales == []


def test_the_same_sale_again_is_a_replay_recorded_once(sdk, cms_sandbox):
    first = sdk.track_sale(click_id="id_123", **SDK_SALE)
    again = sdk.track_sale(click_id="id_123", **SDK_SALE)  # a new call: a new Idempotency-Key
    assert again["success"] is True
    assert again["data"] == {**first["data"], "replayed": True}
    assert len(cms_sandbox.sales) == 1
    assert [request.status for request in cms_sandbox.requests] == [200, 200]


def test_the_same_invoice_with_another_sale_is_a_conflict(sdk, cms_sandbox):
    sdk.track_sale(click_id="id_123", **SDK_SALE)
    result = sdk.track_sale(click_id="id_123", **{**SDK_SALE, "amount": 5000})
    assert (result["success"], result["status_code"], result["type"]) == (False, 409, "duplicate_invoice")
    assert [sale.amount for sale in cms_sandbox.sales] == [4999]


# -- Idempotency-Key ------------------------------------------------------------------------------------------


def test_a_repeated_idempotency_key_replays_the_first_answer(sdk, cms_sandbox):
    kwargs = {"click_id": "id_123", "event_name": "signup_started", "customer_external_id": "user_42"}
    first = sdk.track_lead(idempotency_key="key-1", **kwargs)
    again = sdk.track_lead(idempotency_key="key-1", **kwargs)
    assert again == first
    assert len(cms_sandbox.leads) == 1
    assert [request.idempotency_key for request in cms_sandbox.requests] == ["key-1", "key-1"]


def test_replays_say_so_in_a_header(http):
    headers = {"Idempotency-Key": "key-1"}
    first = http.post("/track/lead", json=LEAD_BODY, headers=headers)
    again = http.post("/track/lead", json=LEAD_BODY, headers=headers)
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


def test_an_idempotency_key_reused_for_another_body_is_a_conflict(sdk, cms_sandbox):
    sdk.track_lead(idempotency_key="key-1", click_id="id_123", event_name="signup_started", customer_external_id="u")
    result = sdk.track_lead(
        idempotency_key="key-1", click_id="id_123", event_name="email_verified", customer_external_id="u"
    )
    assert (result["success"], result["status_code"], result["type"]) == (False, 409, "idempotency_key_reused")
    assert len(cms_sandbox.leads) == 1


def test_refused_answers_are_replayed_too(http, cms_sandbox):
    # Kept once the request passed the checks: the business answer, here a 400, is replayed unchanged.
    body = {"eventName": "e", "customerExternalId": "u"}
    first = http.post("/track/lead", json=body, headers={"Idempotency-Key": "k"})
    http.post("/track/lead", json={**LEAD_BODY, "customerExternalId": "u", "mode": "deferred"})
    again = http.post("/track/lead", json=body, headers={"Idempotency-Key": "k"})
    assert (first.status_code, again.status_code) == (400, 400)
    assert again.headers["idempotent-replayed"] == "true"


def test_an_invalid_request_does_not_use_up_its_key(http, cms_sandbox):
    assert (
        http.post("/track/lead", json={**LEAD_BODY, "clickId": ""}, headers={"Idempotency-Key": "k"}).status_code == 422
    )
    assert http.post("/track/lead", json=LEAD_BODY, headers={"Idempotency-Key": "k"}).status_code == 200


@pytest.mark.parametrize(("key", "problem"), [("", "must not be empty"), ("k" * 256, "must be at most 255 characters")])
def test_idempotency_key_is_checked_against_the_spec(http, key, problem):
    response = http.post("/track/lead", json=LEAD_BODY, headers={"Idempotency-Key": key})
    assert response.status_code == 422
    assert error_body(response)["details"] == {"Idempotency-Key": problem}


# -- request validation ---------------------------------------------------------------------------------------


EMAIL_PROBLEM = "must be an email address like jane@example.com"
URI_PROBLEM = "must be an absolute URI like https://example.com/avatar.png"
DATE_TIME_PROBLEM = "must be an RFC 3339 date-time with an offset: 2024-05-01T12:00:00Z"


@pytest.mark.parametrize(
    ("path", "body", "details"),
    [
        ("/track/lead", {}, {"eventName": "is required", "customerExternalId": "is required"}),
        ("/track/lead", {**LEAD_BODY, "click_id": "x"}, {"click_id": "is not allowed"}),
        ("/track/lead", {**LEAD_BODY, "eventName": ""}, {"eventName": "must not be empty"}),
        ("/track/lead", {**LEAD_BODY, "eventName": 7}, {"eventName": "must be a string"}),
        ("/track/lead", {**LEAD_BODY, "mode": "later"}, {"mode": 'must be one of "deferred"'}),
        ("/track/lead", {**LEAD_BODY, "customerEmail": "jane"}, {"customerEmail": EMAIL_PROBLEM}),
        ("/track/lead", {**LEAD_BODY, "customerAvatar": "not a uri"}, {"customerAvatar": URI_PROBLEM}),
        ("/track/lead", {**LEAD_BODY, "timestamp": "2024-05-01T12:00:00"}, {"timestamp": DATE_TIME_PROBLEM}),
        ("/track/lead", {**LEAD_BODY, "timestamp": "2024-02-30T12:00:00Z"}, {"timestamp": DATE_TIME_PROBLEM}),
        ("/track/lead", [LEAD_BODY], {"body": "must be an object"}),
        ("/track/sale", {**SALE_BODY, "amount": True}, {"amount": "must be an integer"}),
        ("/track/sale", {**SALE_BODY, "amount": 49.99}, {"amount": "must be an integer"}),
        ("/track/sale", {**SALE_BODY, "amount": "4999"}, {"amount": "must be an integer"}),
        ("/track/sale", {**SALE_BODY, "amount": -1}, {"amount": "must be at least 0"}),
        ("/track/sale", {**SALE_BODY, "amount": 2**53}, {"amount": "must be at most 9007199254740991"}),
        ("/track/sale", {**SALE_BODY, "currency": "usd"}, {"currency": "must match the pattern ^[A-Z]{3}$"}),
        ("/track/sale", {**SALE_BODY, "currency": "USD\n"}, {"currency": "must match the pattern ^[A-Z]{3}$"}),
        (
            "/track/sale",
            {"eventName": "e", "customerExternalId": "u", "extra": 1},
            {"invoiceId": "is required", "amount": "is required", "currency": "is required", "extra": "is not allowed"},
        ),
    ],
)  # fmt: skip
def test_bodies_are_checked_against_the_spec(http, cms_sandbox, path, body, details):
    response = http.post(path, json=body)
    assert response.status_code == 422
    assert error_body(response) == {
        "success": False,
        "error": "Validation failed",
        "type": "validation_error",
        "statusCode": 422,
        "details": details,
    }
    assert cms_sandbox.leads == []
    assert cms_sandbox.sales == []
    assert cms_sandbox.requests[-1].status == 422


@pytest.mark.parametrize("content", [b"", b"not json", b'{"eventName": NaN}', b"\xff\xfe{"])
def test_a_body_that_is_not_json_is_a_validation_error(http, content):
    response = http.post("/track/lead", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    details = error_body(response)["details"]
    assert list(details) == ["body"]
    assert details["body"].startswith("must be a JSON object")


def post_raw(way: str, sandbox: Sandbox, content: bytes) -> httpx.Response:
    """POST `content` to /track/lead over the sync or async in-process transport, or over real HTTP."""
    headers = {"Authorization": "Bearer t", "Content-Type": "application/json"}
    if way == "async":

        async def post() -> httpx.Response:
            transport = sandbox.async_transport()
            async with httpx.AsyncClient(transport=transport, base_url=SANDBOX_HOST, headers=headers) as client:
                return await client.post("/track/lead", content=content)

        return asyncio.run(post())
    if way == "http":
        with sandbox.serve() as url, httpx.Client(base_url=url, headers=headers) as client:
            return client.post("/track/lead", content=content)
    with httpx.Client(transport=sandbox.transport(), base_url=SANDBOX_HOST, headers=headers) as client:
        return client.post("/track/lead", content=content)


@pytest.mark.parametrize("way", ["sync", "async", "http"])
@pytest.mark.parametrize(
    "content",
    [
        b"[" * 101 + b"]" * 101,  # one level past the limit
        b'{"a":' * 990 + b"1" + b"}" * 990,  # just under Python's recursion limit
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["101", "990-objects", "100000"],
)
def test_deeply_nested_json_is_a_validation_error(cms_sandbox, way, content):
    response = post_raw(way, cms_sandbox, content)
    assert response.status_code == 422
    assert error_body(response)["details"] == {"body": "must be nested at most 100 levels deep"}
    assert cms_sandbox.requests[-1].status == 422


def test_nesting_up_to_the_limit_is_checked_as_usual(http):
    # The body is one level, the array in it 99 more.
    response = http.post("/track/lead", json={**LEAD_BODY, "extra": json.loads("[" * 99 + "]" * 99)})
    assert response.status_code == 422
    assert error_body(response)["details"] == {"extra": "is not allowed"}


@pytest.mark.parametrize(
    "extra",
    [
        {"timestamp": "2024-05-01T12:00:00.123456+05:30"},
        {"timestamp": "2016-12-31t23:59:60z"},
        {"customerAvatar": "https://cdn.example.com/a%20b.png?size=64#top"},
        {"customerAvatar": "mailto:jane@example.com"},
        {"customerName": ""},
        {"customerEmail": "jane.doe+tag@mail.example.co.uk"},
    ],
)
def test_what_the_spec_allows_is_accepted(http, extra):
    assert http.post("/track/lead", json={**LEAD_BODY, **extra}).status_code == 200


def test_an_integral_float_amount_is_an_integer(http, cms_sandbox):
    # JSON has one number type: 4999.0 is 4999 (as JSON Schema and JavaScript servers see it).
    assert http.post("/track/sale", json={**SALE_BODY, "amount": 4999.0}).status_code == 200
    assert cms_sandbox.sales[0].amount == 4999
    assert isinstance(cms_sandbox.sales[0].amount, int)


# -- authentication, routing, rate limit -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNz", "token-without-scheme"]
)
def test_no_bearer_token_is_unauthorized(cms_sandbox, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(transport=cms_sandbox.transport(), base_url=SANDBOX_HOST) as http:
        response = http.post("/track/lead", json=LEAD_BODY, headers=headers)
    assert response.status_code == 401
    assert error_body(response)["type"] == "unauthorized"
    assert cms_sandbox.leads == []


def test_any_token_is_accepted_by_default(cms_sandbox):
    for token in ("a", "eyJhbGciOiJIUzI1NiJ9.e30.sig"):
        with cms_sandbox.client(token=token) as client:
            assert client.track_lead(click_id="c", event_name="e", customer_external_id="u")["success"] is True


def test_a_sandbox_with_a_token_accepts_only_that_token():
    sandbox = Sandbox(token="s3cret")
    with sandbox.client(token="other") as wrong, sandbox.client() as right:
        refused = wrong.track_lead(click_id="c", event_name="e", customer_external_id="u")
        accepted = right.track_lead(click_id="c", event_name="e", customer_external_id="u")
    assert (refused["success"], refused["status_code"], refused["type"]) == (False, 401, "unauthorized")
    assert accepted["success"] is True
    assert len(sandbox.leads) == 1
    assert sandbox.requests[1].headers["authorization"] == "Bearer s3cret"


def test_unknown_path_is_not_found(http):
    response = http.post("/track/click", json=LEAD_BODY)
    assert response.status_code == 404
    assert error_body(response)["type"] == "not_found"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_not_allowed(http, method):
    response = http.request(method, "/track/lead")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert error_body(response)["type"] == "method_not_allowed"


def test_the_query_string_is_ignored(http):
    assert http.post("/track/lead?source=test", json=LEAD_BODY).status_code == 200


def test_rate_limit_answers_429_with_retry_after_per_token():
    clock = Clock()
    sandbox = Sandbox(rate_limit=2, clock=clock)
    with sandbox.client(max_retries=0) as client, sandbox.client(token="other", max_retries=0) as other:
        assert client.track_lead(click_id="c", event_name="e1", customer_external_id="u")["success"]
        clock.now += 10
        assert client.track_lead(click_id="c", event_name="e2", customer_external_id="u")["success"]
        limited = client.track_lead(click_id="c", event_name="e3", customer_external_id="u")
        assert (limited["success"], limited["status_code"], limited["type"]) == (False, 429, "rate_limited")
        assert sandbox.requests[-1].status == 429
        assert other.track_lead(click_id="c", event_name="e4", customer_external_id="u")["success"]
        clock.now += 50  # the first request leaves the 60 s window
        assert client.track_lead(click_id="c", event_name="e5", customer_external_id="u")["success"]
    assert [lead.event_name for lead in sandbox.leads] == ["e1", "e2", "e4", "e5"]


def test_retry_after_says_when_the_window_frees_up():
    clock = Clock()
    sandbox = Sandbox(rate_limit=1, clock=clock)
    with httpx.Client(
        transport=sandbox.transport(), base_url=SANDBOX_HOST, headers={"Authorization": "Bearer t"}
    ) as http:
        http.post("/track/lead", json=LEAD_BODY)
        clock.now += 20.5
        response = http.post("/track/lead", json=LEAD_BODY)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "40"
    assert error_body(response)["type"] == "rate_limited"


def test_no_rate_limit_by_default(http):
    assert all(http.post("/track/lead", json=LEAD_BODY).status_code == 200 for _ in range(100))


@pytest.mark.parametrize(
    "kwargs", [{"token": ""}, {"token": "  "}, {"rate_limit": 0}, {"rate_limit": True}, {"rate_limit": 1.5}]
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match=r"token|rate_limit"):
        Sandbox(**kwargs)


# -- faults ---------------------------------------------------------------------------------------------------


def test_fail_next_is_retried_by_the_sdk(sdk, cms_sandbox):
    cms_sandbox.fail_next(503)
    result = sdk.track_lead(click_id="c", event_name="e", customer_external_id="u")
    assert result["success"] is True
    assert [request.status for request in cms_sandbox.requests] == [503, 200]
    assert len(cms_sandbox.leads) == 1


def test_fail_next_times_outlasts_the_retries(sdk, cms_sandbox):
    cms_sandbox.fail_next(503, times=3, retry_after=0)
    result = sdk.track_lead(click_id="c", event_name="e", customer_external_id="u")
    assert (result["success"], result["status_code"], result["type"]) == (False, 503, "sandbox_fault")
    assert [request.status for request in cms_sandbox.requests] == [503, 503, 503]
    assert cms_sandbox.leads == []
    assert sdk.track_lead(click_id="c", event_name="e", customer_external_id="u")["success"] is True


def test_fail_next_answers_in_the_error_shape_with_retry_after(http, cms_sandbox):
    cms_sandbox.fail_next(429, retry_after=1.5)
    response = http.post("/track/lead", json=LEAD_BODY)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1.5"
    assert error_body(response)["type"] == "sandbox_fault"
    assert cms_sandbox.leads == []


@pytest.mark.parametrize(
    ("args", "kwargs"), [((200,), {}), ((600,), {}), ((503, 0), {}), ((503,), {"retry_after": -1})]
)
def test_fail_next_refuses_bad_arguments(cms_sandbox, args, kwargs):
    with pytest.raises(ValueError, match=r"status|retry_after|times"):
        cms_sandbox.fail_next(*args, **kwargs)


def test_drop_next_is_a_dropped_connection_the_sdk_retries(sdk, cms_sandbox):
    cms_sandbox.drop_next()
    result = sdk.track_lead(click_id="c", event_name="e", customer_external_id="u")
    assert result["success"] is True
    assert [request.status for request in cms_sandbox.requests] == [None, 200]
    assert len(cms_sandbox.leads) == 1


def test_an_answer_lost_after_processing_is_recorded_once_thanks_to_the_idempotency_key(sdk, cms_sandbox):
    cms_sandbox.drop_next(after_processing=True)
    result = sdk.track_sale(click_id="id_123", **SDK_SALE)
    assert result["success"] is True
    first, retry = cms_sandbox.requests
    assert (first.status, retry.status) == (None, 200)
    assert first.idempotency_key == retry.idempotency_key
    assert len(cms_sandbox.sales) == 1


def test_a_dropped_request_over_a_plain_client_raises(cms_sandbox, http):
    cms_sandbox.drop_next()
    with pytest.raises(httpx.RemoteProtocolError):
        http.post("/track/lead", json=LEAD_BODY)
    assert cms_sandbox.leads == []


def test_delay_next_holds_the_answer_back(sdk, cms_sandbox):
    cms_sandbox.delay_next(0.2)
    started = time.perf_counter()
    assert sdk.track_lead(click_id="c", event_name="e", customer_external_id="u")["success"] is True
    assert time.perf_counter() - started >= 0.2


def test_a_delay_past_the_read_timeout_is_a_timeout_and_the_retry_is_replayed(face, cms_sandbox):
    raw = cms_sandbox.async_client(timeout=0.1) if face.kind == "async" else cms_sandbox.client(timeout=0.1)
    cms_sandbox.delay_next(30.0)
    started = time.perf_counter()
    result = FaceClient(raw, face.run).track_lead(click_id="c", event_name="e", customer_external_id="u")
    face.run(raw.aclose()) if face.kind == "async" else raw.close()
    assert time.perf_counter() - started < 15  # waited the timeout, not the 30 s delay
    assert result["success"] is True
    assert len(cms_sandbox.leads) == 1  # the timed-out attempt was processed; its retry was replayed
    assert [request.status for request in cms_sandbox.requests] == [200, 200]


def test_a_delay_past_the_read_timeout_ends_in_a_timeout_result(cms_sandbox):
    cms_sandbox.delay_next(5.0)
    with cms_sandbox.client(timeout=0.05, max_retries=0) as client:
        result = client.track_lead(click_id="c", event_name="e", customer_external_id="u")
    assert (result["success"], result["type"], result["status_code"]) == (False, "timeout", None)


@pytest.mark.parametrize(("seconds", "times"), [(-1, 1), (float("inf"), 1), (1, 0), (1, True)])
def test_delay_next_refuses_bad_arguments(cms_sandbox, seconds, times):
    with pytest.raises(ValueError, match=r"seconds|times"):
        cms_sandbox.delay_next(seconds, times)


def test_faults_are_used_in_order_one_per_request(http, cms_sandbox):
    cms_sandbox.fail_next(500)
    cms_sandbox.fail_next(502, times=2)
    statuses = [http.post("/track/lead", json=LEAD_BODY).status_code for _ in range(4)]
    assert statuses == [500, 502, 502, 200]


# -- accounts: one per token -----------------------------------------------------------------------------------


def test_each_token_is_an_account_of_its_own(cms_sandbox):
    with cms_sandbox.client(token="token-a") as a, cms_sandbox.client(token="token-b") as b:
        deferred = a.track_lead(click_id="click_A", event_name="lead", customer_external_id="user_42", mode="deferred")
        assert deferred["success"]
        # B does not resolve A's customer through A's association, nor is its own click id a duplicate of it.
        unresolved = b.track_sale(**SDK_SALE)
        assert (unresolved["status_code"], unresolved["type"]) == (400, "missing_click_id")
        assert b.track_lead(click_id="click_B", event_name="signup", customer_external_id="user_42")["success"]
        # The same invoice is a sale of each account, not the other's replayed.
        sale_a = a.track_sale(idempotency_key="key-1", **SDK_SALE)
        sale_b = b.track_sale(idempotency_key="key-1", click_id="click_B", **SDK_SALE)
    assert (sale_a["data"]["clickId"], sale_a["data"]["clickIdSource"], sale_a["data"]["replayed"]) == (
        "click_A",
        "association",
        False,
    )
    assert (sale_b["data"]["clickId"], sale_b["data"]["replayed"]) == ("click_B", False)
    assert sale_a["data"]["id"] != sale_b["data"]["id"]
    assert [sale.click_id for sale in cms_sandbox.sales] == ["click_A", "click_B"]

    account_a, account_b = cms_sandbox.account("token-a"), cms_sandbox.account("token-b")
    assert account_a.associations == {"user_42": "click_A"}
    assert account_b.associations == {}
    assert [lead.click_id for lead in account_a.leads] == ["click_A"]
    assert [(sale.invoice_id, sale.click_id) for sale in account_b.sales] == [("inv_1", "click_B")]
    assert account_b.attributions() == {
        "click_B": ClickSummary("click_B", leads=1, sales=1, revenue={"USD": 4999}, customers=("user_42",))
    }
    assert cms_sandbox.account("never-seen") == Account(leads=[], sales=[], associations={})


def test_the_sandbox_wide_views_cover_every_account(cms_sandbox):
    with cms_sandbox.client(token="token-a") as a, cms_sandbox.client(token="token-b") as b:
        a.track_lead(click_id="click_A", event_name="lead", customer_external_id="user_42", mode="deferred")
        b.track_lead(click_id="click_B", event_name="lead", customer_external_id="user_42", mode="deferred")
        b.track_lead(click_id="click_B", event_name="lead", customer_external_id="user_7", mode="deferred")
    assert [lead.click_id for lead in cms_sandbox.leads] == ["click_A", "click_B", "click_B"]
    # One customer id in two accounts: the association made last.
    assert cms_sandbox.associations == {"user_42": "click_B", "user_7": "click_B"}
    assert cms_sandbox.attributions()["click_B"].customers == ("user_42", "user_7")
    assert [lead.id for lead in cms_sandbox.leads] == ["lead_1", "lead_2", "lead_3"]


# -- inspection -----------------------------------------------------------------------------------------------


def test_attributions_sum_up_leads_sales_and_revenue_per_click(sdk, cms_sandbox):
    sdk.track_lead(click_id="click_A", event_name="signup_started", customer_external_id="user_1")
    sdk.track_lead(click_id="click_B", event_name="lead_captured", customer_external_id="user_2", mode="deferred")
    sdk.track_lead(event_name="email_verified", customer_external_id="user_2")
    sdk.track_sale(**{**SDK_SALE, "customer_external_id": "user_2", "invoice_id": "i1"})
    sdk.track_sale(**{**SDK_SALE, "customer_external_id": "user_2", "invoice_id": "i1"})  # replay: not counted
    sdk.track_sale(
        **{**SDK_SALE, "customer_external_id": "user_2", "invoice_id": "i2", "amount": 1000, "currency": "EUR"}
    )
    sdk.track_sale(
        **{**SDK_SALE, "customer_external_id": "user_3", "invoice_id": "i3", "click_id": "click_A", "amount": 1}
    )
    assert cms_sandbox.attributions() == {
        "click_A": ClickSummary("click_A", leads=1, sales=1, revenue={"USD": 1}, customers=("user_1", "user_3")),
        "click_B": ClickSummary("click_B", leads=2, sales=2, revenue={"USD": 4999, "EUR": 1000}, customers=("user_2",)),
    }


def test_requests_keep_everything_received_including_rejections(http, cms_sandbox):
    http.post("/track/lead", json=LEAD_BODY, headers={"Idempotency-Key": "k1"})
    http.post("/track/lead", json={})
    http.get("/elsewhere")
    first, invalid, unknown = cms_sandbox.requests
    assert (first.method, first.path, first.status, first.idempotency_key) == ("POST", "/track/lead", 200, "k1")
    assert first.json == LEAD_BODY
    assert first.headers["authorization"] == "Bearer t"
    assert first.response is not None
    assert first.response["success"] is True
    assert (invalid.status, unknown.status, unknown.method, unknown.body) == (422, 404, "GET", b"")
    assert unknown.response is not None
    assert unknown.response["type"] == "not_found"


def test_inspection_returns_copies(sdk, cms_sandbox):
    sdk.track_lead(click_id="c", event_name="e", customer_external_id="u", mode="deferred")
    cms_sandbox.leads.clear()
    cms_sandbox.requests.clear()
    cms_sandbox.associations.clear()
    assert (len(cms_sandbox.leads), len(cms_sandbox.requests), cms_sandbox.associations) == (1, 1, {"u": "c"})


def test_client_defaults(cms_sandbox):
    with cms_sandbox.client() as client:
        assert isinstance(client, CMSClient)
        assert client.host == SANDBOX_HOST
        client.track_lead(click_id="c", event_name="e", customer_external_id="u")
    assert cms_sandbox.requests[0].headers["authorization"] == f"Bearer {SANDBOX_TOKEN}"
    assert repr(cms_sandbox) == "Sandbox(leads=1, sales=0, requests=1)"


# -- the HTTP server ------------------------------------------------------------------------------------------


def test_the_documented_journey_over_http(cms_sandbox):
    with cms_sandbox.serve() as url, CMSClient(token="t", host=url) as client:
        assert url.startswith("http://127.0.0.1:")
        assert client.track_lead(click_id="c1", event_name="signup_started", customer_external_id="u1")["success"]
        assert client.track_lead(click_id="c2", event_name="lead", customer_external_id="u2", mode="deferred")[
            "success"
        ]
        assert client.track_lead(event_name="verified", customer_external_id="u2")["success"]
        duplicate = client.track_lead(click_id="c2", event_name="verified", customer_external_id="u2")
        assert (duplicate["status_code"], duplicate["type"]) == (409, "duplicate_attribution")
        sale = {**SDK_SALE, "customer_external_id": "u2"}
        assert client.track_sale(**sale)["data"]["clickId"] == "c2"
        assert client.track_sale(**sale)["data"]["replayed"] is True
        conflict = client.track_sale(**{**sale, "amount": 1})
        assert (conflict["status_code"], conflict["type"]) == (409, "duplicate_invoice")
        missing = client.track_sale(**{**sale, "customer_external_id": "u9", "invoice_id": "i9"})
        assert (missing["status_code"], missing["type"]) == (400, "missing_click_id")
    assert [lead.click_id for lead in cms_sandbox.leads] == ["c1", "c2", "c2"]
    assert len(cms_sandbox.sales) == 1
    assert cms_sandbox.requests[0].headers["idempotency-key"]


def test_the_server_answers_errors_in_the_api_shape(cms_sandbox):
    with cms_sandbox.serve() as url, httpx.Client(base_url=url) as http:
        unauthorized = http.post("/track/lead", json=LEAD_BODY)
        invalid = http.post("/track/sale", json={}, headers={"Authorization": "Bearer t"})
        not_found = http.get("/")
        not_allowed = http.request("TRACE", "/track/sale")
        head = http.head("/track/lead")
    assert unauthorized.status_code == 401
    assert error_body(unauthorized)["type"] == "unauthorized"
    assert invalid.status_code == 422
    assert set(error_body(invalid)["details"]) == set(SALE_BODY) - {"clickId"}
    assert not_found.status_code == 404
    assert error_body(not_found)["type"] == "not_found"
    assert not_allowed.status_code == 405
    assert not_allowed.headers["allow"] == "POST"
    assert (head.status_code, head.content, head.headers["allow"]) == (405, b"", "POST")
    assert all(r.headers["content-type"] == "application/json" for r in (unauthorized, invalid, not_found))


def test_faults_over_http(cms_sandbox):
    with cms_sandbox.serve() as url, CMSClient(token="t", host=url, timeout=0.2, max_retries=3) as client:
        cms_sandbox.fail_next(502, retry_after=0)
        cms_sandbox.drop_next(after_processing=True)
        cms_sandbox.delay_next(1.0)
        result = client.track_sale(click_id="c", **SDK_SALE)
    assert result["success"] is True
    # 502, then dropped after recording the sale, then the replay held back past the timeout, then the replay.
    assert [request.status for request in cms_sandbox.requests] == [502, None, 200, 200]
    assert len(cms_sandbox.sales) == 1


def test_the_server_refuses_bodies_it_will_not_read(cms_sandbox):
    with cms_sandbox.serve() as url:
        host, port = url.removeprefix("http://").split(":")
        too_large = _raw_exchange(host, int(port), b"POST /track/lead HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n")
        chunked = _raw_exchange(host, int(port), b"POST /track/lead HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        bad_length = _raw_exchange(host, int(port), b"POST /track/lead HTTP/1.1\r\nContent-Length: x\r\n\r\n")
    assert too_large.startswith(b"HTTP/1.1 413 ")
    assert b'"payload_too_large"' in too_large
    assert chunked.startswith(b"HTTP/1.1 411 ")
    assert bad_length.startswith(b"HTTP/1.1 400 ")
    assert cms_sandbox.requests == []


def _raw_exchange(host: str, port: int, request: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=5) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):  # the server closes the connection after a refusal
            chunks.append(chunk)
    return b"".join(chunks)


def test_the_server_sends_without_nagle_delay(cms_sandbox):
    """TCP_NODELAY on every connection: otherwise each keep-alive answer waits ~40 ms for a delayed ACK."""
    accepted: list[socket.socket] = []

    class Recording(SandboxServer):
        def finish_request(self, request, client_address):
            accepted.append(request)
            super().finish_request(request, client_address)

    server = Recording(cms_sandbox.handle, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer t"}) as http:
            assert http.post("/track/lead", json=LEAD_BODY).status_code == 200
            (connection,) = accepted
            assert connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_serve_on_ipv6_loopback(cms_sandbox):
    with cms_sandbox.serve(host="::1") as url, CMSClient(token="t", host=url) as client:
        assert url.startswith("http://[::1]:")
        assert client.track_lead(click_id="c", event_name="e", customer_external_id="u")["success"] is True
    assert len(cms_sandbox.leads) == 1


def test_log_lines_escape_what_the_client_sent(cms_sandbox):
    lines: list[str] = []
    with cms_sandbox.serve(log=lines.append) as url:
        host, port = url.removeprefix("http://").split(":")
        answer = _raw_exchange(host, int(port), b"GET /\x1b]0;owned\x07\x9b2J HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404 ")
    assert lines == ["GET /\\x1b]0;owned\\x07\\x9b2J -> 404"]


def test_log_lines_are_handed_over_one_at_a_time(cms_sandbox):
    """Connections are served in threads; a log that writes a line in several pieces must not get them mixed."""
    inside: list[int] = []
    overlaps: list[int] = []
    lock = threading.Lock()

    def log(line: str) -> None:
        with lock:
            inside.append(1)
            overlaps.append(len(inside))
        time.sleep(0.01)  # as a write of the line, then of its newline, could be interrupted
        with lock:
            inside.pop()

    with cms_sandbox.serve(log=log) as url:
        start = threading.Barrier(6)

        def send() -> None:
            with httpx.Client(base_url=url, headers={"Authorization": "Bearer t"}) as http:
                start.wait()
                for _ in range(4):
                    http.post("/track/lead", json=LEAD_BODY)

        threads = [threading.Thread(target=send) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(overlaps) == 24
    assert max(overlaps) == 1


def test_serve_releases_the_port(cms_sandbox):
    with cms_sandbox.serve() as url:
        port = int(url.rsplit(":", 1)[1])
    with cms_sandbox.serve(port=port) as again:
        assert again == f"http://127.0.0.1:{port}"


def test_serve_logs_one_line_per_request(cms_sandbox):
    lines: list[str] = []
    with cms_sandbox.serve(log=lines.append) as url, httpx.Client(base_url=url) as http:
        http.post("/track/lead", json=LEAD_BODY, headers={"Authorization": "Bearer t"})
        http.get("/nope")
    assert lines == ["POST /track/lead -> 200", "GET /nope -> 404"]


def test_concurrent_requests_are_all_recorded(cms_sandbox):
    """The server is threaded and the sandbox locks: no event is lost, and each invoice is recorded once."""
    results: list[bool] = []

    def send(worker: int) -> None:
        with CMSClient(token="t", host=url, max_retries=0) as client:
            for number in range(10):
                # Every worker sends the same 10 sales for one account: each is recorded once, replayed to the others.
                sale = client.track_sale(click_id="c", **{**SDK_SALE, "invoice_id": f"i{number}"})
                lead = client.track_lead(click_id="c", event_name=f"e{number}", customer_external_id=f"u{worker}")
                results.extend((sale["success"], lead["success"]))

    with cms_sandbox.serve() as url:
        threads = [threading.Thread(target=send, args=(worker,)) for worker in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [True] * 160
    assert len(cms_sandbox.leads) == 80
    assert len(cms_sandbox.requests) == 160
    assert sorted(sale.invoice_id for sale in cms_sandbox.sales) == [f"i{number}" for number in range(10)]


def test_recorded_bodies_are_json(cms_sandbox):
    with cms_sandbox.client() as client:
        client.track_lead(click_id="c", event_name="e", customer_external_id="u")
    assert json.loads(cms_sandbox.requests[0].body) == {"clickId": "c", "eventName": "e", "customerExternalId": "u"}
