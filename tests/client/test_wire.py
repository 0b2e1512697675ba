"""What goes over the wire for every call in the seed README: method, path, headers and the exact JSON body."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from cms_python import __version__

from ..conftest import LEAD, SALE, SPEC_PATH, TOKEN
from ..support.servers import Recorded, Reply

IST = timezone(timedelta(hours=5, minutes=30))
AVATAR = "https://cdn.example.com/avatars/jane.png?size=64&v=2"

# (method, keyword arguments, path, exact JSON body): every call shown in the seed README, and more.
CALLS = [
    pytest.param(
        "track_lead",
        {"click_id": "id_123", "event_name": "signup_started", "customer_external_id": "user_42"},
        "/track/lead",
        {"clickId": "id_123", "eventName": "signup_started", "customerExternalId": "user_42"},
        id="lead-standard",
    ),
    pytest.param(
        "track_lead",
        {
            "click_id": "id_123",
            "event_name": "signup_started",
            "customer_external_id": "user_42",
            "customer_name": "Jane Doe",
            "customer_email": "jane@example.com",
        },
        "/track/lead",
        {
            "clickId": "id_123",
            "eventName": "signup_started",
            "customerExternalId": "user_42",
            "customerName": "Jane Doe",
            "customerEmail": "jane@example.com",
        },
        id="lead-with-customer",
    ),
    pytest.param(
        "track_lead",
        {"click_id": "id_123", "event_name": "lead_captured", "customer_external_id": "user_42", "mode": "deferred"},
        "/track/lead",
        {"clickId": "id_123", "eventName": "lead_captured", "customerExternalId": "user_42", "mode": "deferred"},
        id="lead-deferred-first-call",
    ),
    pytest.param(
        "track_lead",
        {"event_name": "kyc_completed", "customer_external_id": "user_42"},
        "/track/lead",
        {"eventName": "kyc_completed", "customerExternalId": "user_42"},
        id="lead-deferred-later-call",
    ),
    pytest.param(
        "track_lead",
        {
            "click_id": "id_123",
            "event_name": "signup_started",
            "customer_external_id": "user_42",
            "customer_name": "Jane Doe",
            "customer_email": "jane@example.com",
            "customer_avatar": AVATAR,
            "timestamp": datetime(2024, 5, 1, 12, 30, 15, tzinfo=IST),
            "mode": "deferred",
        },
        "/track/lead",
        {
            "clickId": "id_123",
            "eventName": "signup_started",
            "customerExternalId": "user_42",
            "customerName": "Jane Doe",
            "customerEmail": "jane@example.com",
            "customerAvatar": AVATAR,
            "timestamp": "2024-05-01T12:30:15+05:30",
            "mode": "deferred",
        },
        id="lead-all-fields",
    ),
    pytest.param(
        "track_sale",
        {
            "click_id": "id_123",
            "event_name": "purchase_completed",
            "customer_external_id": "user_42",
            "invoice_id": "inv_987",
            "amount": 4999,
            "currency": "USD",
            "customer_email": "jane@example.com",
        },
        "/track/sale",
        {
            "clickId": "id_123",
            "eventName": "purchase_completed",
            "customerExternalId": "user_42",
            "invoiceId": "inv_987",
            "amount": 4999,
            "currency": "USD",
            "customerEmail": "jane@example.com",
        },
        id="sale-readme",
    ),
    pytest.param(
        "track_sale",
        {
            "click_id": "id_123",
            "event_name": "purchase_completed",
            "customer_external_id": "user_42",
            "invoice_id": "inv_987",
            "amount": 4999,
            "currency": "usd",
            "customer_name": "Jane Doe",
            "customer_email": "jane@example.com",
            "customer_avatar": AVATAR,
            "timestamp": datetime(2024, 5, 1, 7, 0, tzinfo=timezone.utc),
        },
        "/track/sale",
        {
            "clickId": "id_123",
            "eventName": "purchase_completed",
            "customerExternalId": "user_42",
            "invoiceId": "inv_987",
            "amount": 4999,
            "currency": "USD",
            "customerName": "Jane Doe",
            "customerEmail": "jane@example.com",
            "customerAvatar": AVATAR,
            "timestamp": "2024-05-01T07:00:00+00:00",
        },
        id="sale-all-fields",
    ),
    pytest.param(
        "track_sale",
        {
            "event_name": "purchase_completed",
            "customer_external_id": "user_42",
            "invoice_id": "inv_988",
            "amount": 0,
            "currency": "EUR",
        },
        "/track/sale",
        {
            "eventName": "purchase_completed",
            "customerExternalId": "user_42",
            "invoiceId": "inv_988",
            "amount": 0,
            "currency": "EUR",
        },
        id="sale-without-click-id",
    ),
]


@pytest.fixture(scope="module")
def payload_validators() -> dict[str, Draft202012Validator]:
    spec = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return {
        path: Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})
        for path, name in (("/track/lead", "LeadPayload"), ("/track/sale", "SalePayload"))
    }


def headers_of(request: Recorded) -> dict[str, str]:
    """Header names are case-insensitive: compare them lower-cased."""
    return {name.lower(): value for name, value in request.headers.items()}


def only_request(server: Any) -> Recorded:
    assert len(server.requests) == 1, server.requests
    return server.requests[0]  # type: ignore[no-any-return]


def send(client: Any, method: str, kwargs: dict[str, Any]) -> Any:
    result = getattr(client, method)(**kwargs)
    assert result["success"] is True, result
    return result


@pytest.mark.parametrize(("method", "kwargs", "path", "body"), CALLS)
def test_request_on_the_wire(client, server, payload_validators, method, kwargs, path, body):
    send(client, method, kwargs)
    request = only_request(server)
    assert (request.method, request.path) == ("POST", path)
    # The exact body: camelCase keys, unset optionals left out (never sent as null).
    assert request.json == body
    assert b"null" not in request.body
    assert [error.message for error in payload_validators[path].iter_errors(request.json)] == []
    headers = headers_of(request)
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["content-type"] == "application/json"
    assert f"cms-python-client/{__version__}" in headers["user-agent"]
    assert uuid.UUID(headers["idempotency-key"]).version == 4


def test_user_agent_names_the_installed_version(client, server):
    send(client, "track_lead", LEAD)
    user_agent = headers_of(only_request(server))["user-agent"]
    assert __version__ == version("cms-python-client")
    assert user_agent.startswith(f"cms-python-client/{__version__} ")


@pytest.mark.parametrize(("method", "kwargs"), [("track_lead", LEAD), ("track_sale", SALE)])
def test_sdk_headers_go_with_every_request(face, server, method, kwargs):
    # As CutMeShort's other SDKs identify themselves; on retries too.
    server.queue(Reply(status=503, body=b""))
    client = face.client(host=server.url)
    send(client, method, kwargs)
    assert len(server.requests) == 2
    for request in server.requests:
        headers = headers_of(request)
        assert headers["x-cms-sdk-version"] == f"python-{__version__}"
        assert headers["x-cms-sdk-runtime"] == "python"


def test_the_sandbox_records_the_sdk_headers(cms_sandbox):
    with cms_sandbox.client() as client:
        send(client, "track_lead", LEAD)
    (request,) = cms_sandbox.requests
    assert (request.headers["x-cms-sdk-version"], request.headers["x-cms-sdk-runtime"]) == (
        f"python-{__version__}",
        "python",
    )


@pytest.mark.parametrize(("method", "kwargs"), [("track_lead", LEAD), ("track_sale", SALE)])
def test_each_call_gets_its_own_idempotency_key(client, server, method, kwargs):
    send(client, method, kwargs)
    send(client, method, kwargs)
    first, second = (headers_of(request)["idempotency-key"] for request in server.requests)
    assert first != second


@pytest.mark.parametrize(("method", "kwargs"), [("track_lead", LEAD), ("track_sale", SALE)])
def test_callers_idempotency_key_is_sent(client, server, method, kwargs):
    send(client, method, {**kwargs, "idempotency_key": "order-987-attempt"})
    request = only_request(server)
    assert headers_of(request)["idempotency-key"] == "order-987-attempt"
    assert "idempotencyKey" not in request.json


@pytest.mark.parametrize(
    ("timestamp", "sent"),
    [
        pytest.param(datetime(2024, 5, 1, 12, 30, tzinfo=IST), "2024-05-01T12:30:00+05:30", id="ist"),
        pytest.param(datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc), "2024-05-01T12:30:00+00:00", id="utc"),
        pytest.param(
            datetime(2024, 12, 31, 23, 59, 59, 123456, tzinfo=timezone(timedelta(hours=-8))),
            "2024-12-31T23:59:59.123456-08:00",
            id="microseconds-negative-offset",
        ),
    ],
)
@pytest.mark.parametrize("method", ["track_lead", "track_sale"])
def test_timestamp_is_iso_8601_with_its_offset(client, server, method, timestamp, sent):
    kwargs = LEAD if method == "track_lead" else SALE
    send(client, method, {**kwargs, "timestamp": timestamp})
    wire = only_request(server).json["timestamp"]
    assert wire == sent
    assert datetime.fromisoformat(wire) == timestamp
    assert datetime.fromisoformat(wire).utcoffset() == timestamp.utcoffset()


@pytest.mark.parametrize(("currency", "sent"), [("usd", "USD"), ("Eur", "EUR"), ("JPY", "JPY")])
def test_currency_is_sent_upper_case(client, server, currency, sent):
    send(client, "track_sale", {**SALE, "currency": currency})
    assert only_request(server).json["currency"] == sent


@pytest.mark.parametrize("amount", [0, 1, 4999, 2**53 - 1])
def test_amount_is_sent_as_an_exact_integer(client, server, amount):
    send(client, "track_sale", {**SALE, "amount": amount})
    request = only_request(server)
    sent = request.json["amount"]
    assert type(sent) is int  # "4999.0" would load as a float
    assert sent == amount


@pytest.mark.parametrize(
    "avatar",
    [AVATAR, "http://example.com/a.png", "https://example.com/path%20with%20escapes/%E2%9C%93.png#frag"],
)
def test_customer_avatar_passes_through(client, server, avatar):
    send(client, "track_lead", {**LEAD, "customer_avatar": avatar})
    assert only_request(server).json["customerAvatar"] == avatar


def test_unicode_values_arrive_intact(client, server):
    send(client, "track_lead", {**LEAD, "customer_name": "Zoë Ångström 日本 🎉", "event_name": "inscrição"})
    request = only_request(server)
    assert request.json["customerName"] == "Zoë Ångström 日本 🎉"
    assert request.json["eventName"] == "inscrição"
    json.loads(request.body.decode("utf-8"))  # valid UTF-8 JSON
