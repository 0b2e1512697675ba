"""The sandbox's rules, through the public SDK (both faces, over the in-process transports), through raw HTTP
requests for what the SDK never sends, and through the loopback HTTP server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from cms_python import CMSClient, _retry
from cms_python._schema import Validator, load_spec
from cms_python.testing import SANDBOX_HOST, SANDBOX_TOKEN, ClickSummary, Sandbox

from .conftest import Face, FaceClient

LEAD = {"eventName": "signup_started", "customerExternalId": "user_42", "clickId": "id_123"}
SALE = {
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
def sandbox() -> Sandbox:
    return Sandbox()


@pytest.fixture
def sdk(face: Face, sandbox: Sandbox) -> Iterator[FaceClient]:
    """The SDK client of the face under test (sync or async), wired to `sandbox` in-process."""
    raw = sandbox.async_client() if face.kind == "async" else sandbox.client()
    yield FaceClient(raw, face.run)
    face.run(raw.aclose()) if face.kind == "async" else raw.close()


@pytest.fixture
def http(sandbox: Sandbox) -> Iterator[httpx.Client]:
    """A plain httpx client over the sandbox's transport, for requests the SDK would refuse to send."""
    with httpx.Client(
        transport=sandbox.transport(), base_url=SANDBOX_HOST, headers={"Authorization": "Bearer t"}
    ) as client:
        yield client


@pytest.fixture
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_retry, "INITIAL_DELAY", 0.01)


def error_body(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["statusCode"] == response.status_code
    assert isinstance(body["error"], str)
    assert isinstance(body["type"], str)
    return body


# -- leads and deferred attribution ---------------------------------------------------------------------------


def test_standard_lead_is_recorded_and_answered_in_the_documented_shape(sdk, sandbox):
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
    (lead,) = sandbox.leads
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
    assert sandbox.associations == {}  # a standard lead stores no association


def test_the_server_sets_the_timestamp_when_absent(sdk, sandbox):
    before = datetime.now(timezone.utc)
    sdk.track_lead(click_id="id_123", event_name="signup_started", customer_external_id="user_42")
    (lead,) = sandbox.leads
    assert before <= datetime.fromisoformat(lead.timestamp.replace("Z", "+00:00")) <= datetime.now(timezone.utc)


def test_deferred_lead_stores_the_association_and_later_events_resolve_through_it(sdk, sandbox):
    first = sdk.track_lead(
        click_id="id_123", event_name="lead_captured", customer_external_id="user_42", mode="deferred"
    )
    later = sdk.track_lead(event_name="kyc_completed", customer_external_id="user_42")
    assert first["success"]
    assert later["success"]
    assert first["data"]["deferred"] is True
    assert (later["data"]["clickId"], later["data"]["clickIdSource"]) == ("id_123", "association")
    assert sandbox.associations == {"user_42": "id_123"}
    deferred, resolved = sandbox.leads
    assert (deferred.deferred, deferred.click_id_source, deferred.payload["mode"]) == (True, "request", "deferred")
    assert (resolved.click_id, resolved.click_id_source, "clickId" in resolved.payload) == (
        "id_123",
        "association",
        False,
    )


@pytest.mark.parametrize("mode", [None, "deferred"])
def test_click_id_again_after_a_deferred_lead_is_a_duplicate_attribution(sdk, sandbox, mode):
    sdk.track_lead(click_id="id_123", event_name="lead_captured", customer_external_id="user_42", mode="deferred")
    result = sdk.track_lead(click_id="id_123", event_name="kyc_completed", customer_external_id="user_42", mode=mode)
    assert result["success"] is False
    assert (result["status_code"], result["type"]) == (409, "duplicate_attribution")
    assert len(sandbox.leads) == 1
    assert sandbox.associations == {"user_42": "id_123"}


def test_lead_without_click_id_or_association_is_refused(sdk, sandbox):
    # Another customer's association does not count.
    sdk.track_lead(click_id="id_123", event_name="lead_captured", customer_external_id="user_1", mode="deferred")
    result = sdk.track_lead(event_name="kyc_completed", customer_external_id="user_42")
    assert (result["success"], result["status_code"], result["type"]) == (False, 400, "missing_click_id")
    assert "clickId" in result["error"]
    assert len(sandbox.leads) == 1


def test_deferred_mode_without_click_id_is_refused(http, sandbox):
    response = http.post("/track/lead", json={"eventName": "e", "customerExternalId": "u", "mode": "deferred"})
    assert response.status_code == 400
    assert error_body(response)["type"] == "missing_click_id"
    assert sandbox.leads == []
    assert sandbox.associations == {}


# -- sales ----------------------------------------------------------------------------------------------------


def test_sale_with_click_id_is_recorded(sdk, sandbox):
    result = sdk.track_sale(click_id="id_123", customer_email="jane@example.com", **SDK_SALE)
    assert result["success"] is True
    assert result["data"]["replayed"] is False
    (sale,) = sandbox.sales
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


def test_sale_without_click_id_resolves_through_the_deferred_association(sdk, sandbox):
    sdk.track_lead(click_id="id_123", event_name="lead_captured", customer_external_id="user_42", mode="deferred")
    result = sdk.track_sale(**SDK_SALE)
    assert (result["data"]["clickId"], result["data"]["clickIdSource"]) == ("id_123", "association")
    assert (sandbox.sales[0].click_id, sandbox.sales[0].click_id_source) == ("id_123", "association")


def test_sale_without_click_id_or_association_is_refused(sdk, sandbox):
    result = sdk.track_sale(**SDK_SALE)
    assert (result["success"], result["status_code"], result["type"]) == (False, 400, "missing_click_id")
    assert sandbox.sales == []


def test_the_same_sale_again_is_a_replay_recorded_once(sdk, sandbox):
    first = sdk.track_sale(click_id="id_123", **SDK_SALE)
    again = sdk.track_sale(click_id="id_123", **SDK_SALE)  # a new call: a new Idempotency-Key
    assert again["success"] is True
    assert again["data"] == {**first["data"], "replayed": True}
    assert len(sandbox.sales) == 1
    assert [request.status for request in sandbox.requests] == [200, 200]


def test_the_same_invoice_with_another_sale_is_a_conflict(sdk, sandbox):
    sdk.track_sale(click_id="id_123", **SDK_SALE)
    result = sdk.track_sale(click_id="id_123", **{**SDK_SALE, "amount": 5000})
    assert (result["success"], result["status_code"], result["type"]) == (False, 409, "duplicate_invoice")
    assert [sale.amount for sale in sandbox.sales] == [4999]


# -- Idempotency-Key ------------------------------------------------------------------------------------------


def test_a_repeated_idempotency_key_replays_the_first_answer(sdk, sandbox):
    kwargs = {"click_id": "id_123", "event_name": "signup_started", "customer_external_id": "user_42"}
    first = sdk.track_lead(idempotency_key="key-1", **kwargs)
    again = sdk.track_lead(idempotency_key="key-1", **kwargs)
    assert again == first
    assert len(sandbox.leads) == 1
    assert [request.idempotency_key for request in sandbox.requests] == ["key-1", "key-1"]


def test_replays_say_so_in_a_header(http):
    headers = {"Idempotency-Key": "key-1"}
    first = http.post("/track/lead", json=LEAD, headers=headers)
    again = http.post("/track/lead", json=LEAD, headers=headers)
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


def test_an_idempotency_key_reused_for_another_body_is_a_conflict(sdk, sandbox):
    sdk.track_lead(idempotency_key="key-1", click_id="id_123", event_name="signup_started", customer_external_id="u")
    result = sdk.track_lead(
        idempotency_key="key-1", click_id="id_123", event_name="email_verified", customer_external_id="u"
    )
    assert (result["success"], result["status_code"], result["type"]) == (False, 409, "idempotency_key_reused")
    assert len(sandbox.leads) == 1


def test_refused_answers_are_replayed_too(http, sandbox):
    # Kept once the request passed the checks: the business answer, here a 400, is replayed unchanged.
    body = {"eventName": "e", "customerExternalId": "u"}
    first = http.post("/track/lead", json=body, headers={"Idempotency-Key": "k"})
    http.post("/track/lead", json={**LEAD, "customerExternalId": "u", "mode": "deferred"})
    again = http.post("/track/lead", json=body, headers={"Idempotency-Key": "k"})
    assert (first.status_code, again.status_code) == (400, 400)
    assert again.headers["idempotent-replayed"] == "true"


def test_an_invalid_request_does_not_use_up_its_key(http, sandbox):
    assert http.post("/track/lead", json={**LEAD, "clickId": ""}, headers={"Idempotency-Key": "k"}).status_code == 422
    assert http.post("/track/lead", json=LEAD, headers={"Idempotency-Key": "k"}).status_code == 200


@pytest.mark.parametrize(("key", "problem"), [("", "must not be empty"), ("k" * 256, "must be at most 255 characters")])
def test_idempotency_key_is_checked_against_the_spec(http, key, problem):
    response = http.post("/track/lead", json=LEAD, headers={"Idempotency-Key": key})
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
        ("/track/lead", {**LEAD, "click_id": "x"}, {"click_id": "is not allowed"}),
        ("/track/lead", {**LEAD, "eventName": ""}, {"eventName": "must not be empty"}),
        ("/track/lead", {**LEAD, "eventName": 7}, {"eventName": "must be a string"}),
        ("/track/lead", {**LEAD, "mode": "later"}, {"mode": 'must be one of "deferred"'}),
        ("/track/lead", {**LEAD, "customerEmail": "jane"}, {"customerEmail": EMAIL_PROBLEM}),
        ("/track/lead", {**LEAD, "customerAvatar": "not a uri"}, {"customerAvatar": URI_PROBLEM}),
        ("/track/lead", {**LEAD, "timestamp": "2024-05-01T12:00:00"}, {"timestamp": DATE_TIME_PROBLEM}),
        ("/track/lead", {**LEAD, "timestamp": "2024-02-30T12:00:00Z"}, {"timestamp": DATE_TIME_PROBLEM}),
        ("/track/lead", [LEAD], {"body": "must be an object"}),
        ("/track/sale", {**SALE, "amount": True}, {"amount": "must be an integer"}),
        ("/track/sale", {**SALE, "amount": 49.99}, {"amount": "must be an integer"}),
        ("/track/sale", {**SALE, "amount": "4999"}, {"amount": "must be an integer"}),
        ("/track/sale", {**SALE, "amount": -1}, {"amount": "must be at least 0"}),
        ("/track/sale", {**SALE, "amount": 2**53}, {"amount": "must be at most 9007199254740991"}),
        ("/track/sale", {**SALE, "currency": "usd"}, {"currency": "must match the pattern ^[A-Z]{3}$"}),
        ("/track/sale", {**SALE, "currency": "USD\n"}, {"currency": "must match the pattern ^[A-Z]{3}$"}),
        (
            "/track/sale",
            {"eventName": "e", "customerExternalId": "u", "extra": 1},
            {"invoiceId": "is required", "amount": "is required", "currency": "is required", "extra": "is not allowed"},
        ),
    ],
)  # fmt: skip
def test_bodies_are_checked_against_the_spec(http, sandbox, path, body, details):
    response = http.post(path, json=body)
    assert response.status_code == 422
    assert error_body(response) == {
        "success": False,
        "error": "Validation failed",
        "type": "validation_error",
        "statusCode": 422,
        "details": details,
    }
    assert sandbox.leads == []
    assert sandbox.sales == []
    assert sandbox.requests[-1].status == 422


@pytest.mark.parametrize("content", [b"", b"not json", b'{"eventName": NaN}', b"\xff\xfe{"])
def test_a_body_that_is_not_json_is_a_validation_error(http, content):
    response = http.post("/track/lead", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    details = error_body(response)["details"]
    assert list(details) == ["body"]
    assert details["body"].startswith("must be a JSON object")


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
    assert http.post("/track/lead", json={**LEAD, **extra}).status_code == 200


def test_an_integral_float_amount_is_an_integer(http, sandbox):
    # JSON has one number type: 4999.0 is 4999 (as JSON Schema and JavaScript servers see it).
    assert http.post("/track/sale", json={**SALE, "amount": 4999.0}).status_code == 200
    assert sandbox.sales[0].amount == 4999
    assert isinstance(sandbox.sales[0].amount, int)


def test_the_validator_supports_every_keyword_of_the_request_schemas():
    spec = load_spec()
    validator = Validator(spec)
    optional = {
        "customerName": "Jane",
        "customerEmail": "jane@example.com",
        "customerAvatar": "https://example.com/a.png",
        "timestamp": "2024-05-01T12:00:00Z",
    }
    # Every property visited (an unknown keyword would raise ValueError), and no problem with valid bodies.
    for name, body in (
        ("LeadPayload", {**LEAD, **optional, "mode": "deferred"}),
        ("SalePayload", {**SALE, **optional}),
    ):
        schema = validator.resolve(f"#/components/schemas/{name}")
        assert set(body) == set(schema["properties"])
        assert validator.problems(schema, body) == {}
    assert validator.problems(spec["components"]["parameters"]["IdempotencyKey"]["schema"], "k") == {}


@pytest.mark.parametrize(
    "schema", [{"oneOf": [{"type": "string"}]}, {"type": "string", "format": "ipv4"}, {"type": "decimal"}]
)
def test_the_validator_refuses_what_it_does_not_know(schema):
    with pytest.raises(ValueError, match="unsupported"):
        Validator({}).problems(schema, "1.2.3.4")


def test_the_validator_reports_nested_fields_by_path():
    schema = {
        "type": "object",
        "properties": {"customer": {"type": "object", "required": ["id"], "additionalProperties": False}},
    }
    assert Validator({}).problems(schema, {"customer": {"x": 1}}) == {
        "customer.id": "is required",
        "customer.x": "is not allowed",
    }


# -- authentication, routing, rate limit -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNz", "token-without-scheme"]
)
def test_no_bearer_token_is_unauthorized(sandbox, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(transport=sandbox.transport(), base_url=SANDBOX_HOST) as http:
        response = http.post("/track/lead", json=LEAD, headers=headers)
    assert response.status_code == 401
    assert error_body(response)["type"] == "unauthorized"
    assert sandbox.leads == []


def test_any_token_is_accepted_by_default(sandbox):
    for token in ("a", "eyJhbGciOiJIUzI1NiJ9.e30.sig"):
        with sandbox.client(token=token) as client:
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
    response = http.post("/track/click", json=LEAD)
    assert response.status_code == 404
    assert error_body(response)["type"] == "not_found"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_not_allowed(http, method):
    response = http.request(method, "/track/lead")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert error_body(response)["type"] == "method_not_allowed"


def test_the_query_string_is_ignored(http):
    assert http.post("/track/lead?source=test", json=LEAD).status_code == 200


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
        http.post("/track/lead", json=LEAD)
        clock.now += 20.5
        response = http.post("/track/lead", json=LEAD)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "40"
    assert error_body(response)["type"] == "rate_limited"


def test_no_rate_limit_by_default(http):
    assert all(http.post("/track/lead", json=LEAD).status_code == 200 for _ in range(100))


@pytest.mark.parametrize(
    "kwargs", [{"token": ""}, {"token": "  "}, {"rate_limit": 0}, {"rate_limit": True}, {"rate_limit": 1.5}]
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match=r"token|rate_limit"):
        Sandbox(**kwargs)


# -- faults ---------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("_fast_backoff")
def test_fail_next_is_retried_by_the_sdk(sdk, sandbox):
    sandbox.fail_next(503)
    result = sdk.track_lead(click_id="c", event_name="e", customer_external_id="u")
    assert result["success"] is True
    assert [request.status for request in sandbox.requests] == [503, 200]
    assert len(sandbox.leads) == 1


def test_fail_next_times_outlasts_the_retries(sdk, sandbox):
    sandbox.fail_next(503, times=3, retry_after=0)
    result = sdk.track_lead(click_id="c", event_name="e", customer_external_id="u")
    assert (result["success"], result["status_code"], result["type"]) == (False, 503, "sandbox_fault")
    assert [request.status for request in sandbox.requests] == [503, 503, 503]
    assert sandbox.leads == []
    assert sdk.track_lead(click_id="c", event_name="e", customer_external_id="u")["success"] is True


def test_fail_next_answers_in_the_error_shape_with_retry_after(http, sandbox):
    sandbox.fail_next(429, retry_after=1.5)
    response = http.post("/track/lead", json=LEAD)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1.5"
    assert error_body(response)["type"] == "sandbox_fault"
    assert sandbox.leads == []


@pytest.mark.parametrize(
    ("args", "kwargs"), [((200,), {}), ((600,), {}), ((503, 0), {}), ((503,), {"retry_after": -1})]
)
def test_fail_next_refuses_bad_arguments(sandbox, args, kwargs):
    with pytest.raises(ValueError, match=r"status|retry_after|times"):
        sandbox.fail_next(*args, **kwargs)


@pytest.mark.usefixtures("_fast_backoff")
def test_drop_next_is_a_dropped_connection_the_sdk_retries(sdk, sandbox):
    sandbox.drop_next()
    result = sdk.track_lead(click_id="c", event_name="e", customer_external_id="u")
    assert result["success"] is True
    assert [request.status for request in sandbox.requests] == [None, 200]
    assert len(sandbox.leads) == 1


@pytest.mark.usefixtures("_fast_backoff")
def test_an_answer_lost_after_processing_is_recorded_once_thanks_to_the_idempotency_key(sdk, sandbox):
    sandbox.drop_next(after_processing=True)
    result = sdk.track_sale(click_id="id_123", **SDK_SALE)
    assert result["success"] is True
    first, retry = sandbox.requests
    assert (first.status, retry.status) == (None, 200)
    assert first.idempotency_key == retry.idempotency_key
    assert len(sandbox.sales) == 1


def test_a_dropped_request_over_a_plain_client_raises(sandbox, http):
    sandbox.drop_next()
    with pytest.raises(httpx.RemoteProtocolError):
        http.post("/track/lead", json=LEAD)
    assert sandbox.leads == []


def test_delay_next_holds_the_answer_back(sdk, sandbox):
    sandbox.delay_next(0.2)
    started = time.perf_counter()
    assert sdk.track_lead(click_id="c", event_name="e", customer_external_id="u")["success"] is True
    assert time.perf_counter() - started >= 0.2


@pytest.mark.usefixtures("_fast_backoff")
def test_a_delay_past_the_read_timeout_is_a_timeout_and_the_retry_is_replayed(face, sandbox):
    raw = sandbox.async_client(timeout=0.1) if face.kind == "async" else sandbox.client(timeout=0.1)
    sandbox.delay_next(5.0)
    started = time.perf_counter()
    result = FaceClient(raw, face.run).track_lead(click_id="c", event_name="e", customer_external_id="u")
    face.run(raw.aclose()) if face.kind == "async" else raw.close()
    assert time.perf_counter() - started < 2.0  # waited the timeout, not the delay
    assert result["success"] is True
    assert len(sandbox.leads) == 1  # the timed-out attempt was processed; its retry was replayed
    assert [request.status for request in sandbox.requests] == [200, 200]


def test_a_delay_past_the_read_timeout_ends_in_a_timeout_result(sandbox):
    sandbox.delay_next(5.0)
    with sandbox.client(timeout=0.05, max_retries=0) as client:
        result = client.track_lead(click_id="c", event_name="e", customer_external_id="u")
    assert (result["success"], result["type"], result["status_code"]) == (False, "timeout", None)


@pytest.mark.parametrize(("seconds", "times"), [(-1, 1), (float("inf"), 1), (1, 0), (1, True)])
def test_delay_next_refuses_bad_arguments(sandbox, seconds, times):
    with pytest.raises(ValueError, match=r"seconds|times"):
        sandbox.delay_next(seconds, times)


def test_faults_are_used_in_order_one_per_request(http, sandbox):
    sandbox.fail_next(500)
    sandbox.fail_next(502, times=2)
    statuses = [http.post("/track/lead", json=LEAD).status_code for _ in range(4)]
    assert statuses == [500, 502, 502, 200]


# -- inspection -----------------------------------------------------------------------------------------------


def test_attributions_sum_up_leads_sales_and_revenue_per_click(sdk, sandbox):
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
    assert sandbox.attributions() == {
        "click_A": ClickSummary("click_A", leads=1, sales=1, revenue={"USD": 1}, customers=("user_1", "user_3")),
        "click_B": ClickSummary("click_B", leads=2, sales=2, revenue={"USD": 4999, "EUR": 1000}, customers=("user_2",)),
    }


def test_requests_keep_everything_received_including_rejections(http, sandbox):
    http.post("/track/lead", json=LEAD, headers={"Idempotency-Key": "k1"})
    http.post("/track/lead", json={})
    http.get("/elsewhere")
    first, invalid, unknown = sandbox.requests
    assert (first.method, first.path, first.status, first.idempotency_key) == ("POST", "/track/lead", 200, "k1")
    assert first.json == LEAD
    assert first.headers["authorization"] == "Bearer t"
    assert first.response is not None
    assert first.response["success"] is True
    assert (invalid.status, unknown.status, unknown.method, unknown.body) == (422, 404, "GET", b"")
    assert unknown.response is not None
    assert unknown.response["type"] == "not_found"


def test_inspection_returns_copies(sdk, sandbox):
    sdk.track_lead(click_id="c", event_name="e", customer_external_id="u", mode="deferred")
    sandbox.leads.clear()
    sandbox.requests.clear()
    sandbox.associations.clear()
    assert (len(sandbox.leads), len(sandbox.requests), sandbox.associations) == (1, 1, {"u": "c"})


def test_client_defaults(sandbox):
    with sandbox.client() as client:
        assert isinstance(client, CMSClient)
        assert client.host == SANDBOX_HOST
        client.track_lead(click_id="c", event_name="e", customer_external_id="u")
    assert sandbox.requests[0].headers["authorization"] == f"Bearer {SANDBOX_TOKEN}"
    assert repr(sandbox) == "Sandbox(leads=1, sales=0, requests=1)"


# -- the HTTP server ------------------------------------------------------------------------------------------


def test_the_documented_journey_over_http(sandbox):
    with sandbox.serve() as url, CMSClient(token="t", host=url) as client:
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
    assert [lead.click_id for lead in sandbox.leads] == ["c1", "c2", "c2"]
    assert len(sandbox.sales) == 1
    assert sandbox.requests[0].headers["idempotency-key"]


def test_the_server_answers_errors_in_the_api_shape(sandbox):
    with sandbox.serve() as url, httpx.Client(base_url=url) as http:
        unauthorized = http.post("/track/lead", json=LEAD)
        invalid = http.post("/track/sale", json={}, headers={"Authorization": "Bearer t"})
        not_found = http.get("/")
        not_allowed = http.request("TRACE", "/track/sale")
        head = http.head("/track/lead")
    assert unauthorized.status_code == 401
    assert error_body(unauthorized)["type"] == "unauthorized"
    assert invalid.status_code == 422
    assert set(error_body(invalid)["details"]) == set(SALE) - {"clickId"}
    assert not_found.status_code == 404
    assert error_body(not_found)["type"] == "not_found"
    assert not_allowed.status_code == 405
    assert not_allowed.headers["allow"] == "POST"
    assert (head.status_code, head.content, head.headers["allow"]) == (405, b"", "POST")
    assert all(r.headers["content-type"] == "application/json" for r in (unauthorized, invalid, not_found))


def test_faults_over_http(sandbox, monkeypatch):
    monkeypatch.setattr(_retry, "INITIAL_DELAY", 0.01)
    with sandbox.serve() as url, CMSClient(token="t", host=url, timeout=0.2, max_retries=3) as client:
        sandbox.fail_next(502, retry_after=0)
        sandbox.drop_next(after_processing=True)
        sandbox.delay_next(1.0)
        result = client.track_sale(click_id="c", **SDK_SALE)
    assert result["success"] is True
    # 502, then dropped after recording the sale, then the replay held back past the timeout, then the replay.
    assert [request.status for request in sandbox.requests] == [502, None, 200, 200]
    assert len(sandbox.sales) == 1


def test_the_server_refuses_bodies_it_will_not_read(sandbox):
    with sandbox.serve() as url:
        host, port = url.removeprefix("http://").split(":")
        too_large = _raw_exchange(host, int(port), b"POST /track/lead HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n")
        chunked = _raw_exchange(host, int(port), b"POST /track/lead HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        bad_length = _raw_exchange(host, int(port), b"POST /track/lead HTTP/1.1\r\nContent-Length: x\r\n\r\n")
    assert too_large.startswith(b"HTTP/1.1 413 ")
    assert b'"payload_too_large"' in too_large
    assert chunked.startswith(b"HTTP/1.1 411 ")
    assert bad_length.startswith(b"HTTP/1.1 400 ")
    assert sandbox.requests == []


def _raw_exchange(host: str, port: int, request: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=5) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):  # the server closes the connection after a refusal
            chunks.append(chunk)
    return b"".join(chunks)


def test_serve_releases_the_port(sandbox):
    with sandbox.serve() as url:
        port = int(url.rsplit(":", 1)[1])
    with sandbox.serve(port=port) as again:
        assert again == f"http://127.0.0.1:{port}"


def test_serve_logs_one_line_per_request(sandbox):
    lines: list[str] = []
    with sandbox.serve(log=lines.append) as url, httpx.Client(base_url=url) as http:
        http.post("/track/lead", json=LEAD, headers={"Authorization": "Bearer t"})
        http.get("/nope")
    assert lines == ["POST /track/lead -> 200", "GET /nope -> 404"]


def test_concurrent_requests_are_all_recorded(sandbox):
    """The server is threaded and the sandbox locks: no event is lost, and each invoice is recorded once."""
    results: list[bool] = []

    def send(worker: int) -> None:
        with CMSClient(token=f"token-{worker}", host=url, max_retries=0) as client:
            for number in range(10):
                # Every worker sends the same 10 sales: each is recorded once and replayed to the others.
                sale = client.track_sale(click_id="c", **{**SDK_SALE, "invoice_id": f"i{number}"})
                lead = client.track_lead(click_id="c", event_name=f"e{number}", customer_external_id=f"u{worker}")
                results.extend((sale["success"], lead["success"]))

    with sandbox.serve() as url:
        threads = [threading.Thread(target=send, args=(worker,)) for worker in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [True] * 160
    assert len(sandbox.leads) == 80
    assert len(sandbox.requests) == 160
    assert sorted(sale.invoice_id for sale in sandbox.sales) == [f"i{number}" for number in range(10)]


def test_recorded_bodies_are_json(sandbox):
    with sandbox.client() as client:
        client.track_lead(click_id="c", event_name="e", customer_external_id="u")
    assert json.loads(sandbox.requests[0].body) == {"clickId": "c", "eventName": "e", "customerExternalId": "u"}
