"""The low-level client generated from the spec (`cms_api_client`), used directly against the loopback server."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from http import HTTPStatus

import pytest
from cms_api_client import AuthenticatedClient, Client
from cms_api_client.api.tracking import track_lead, track_sale
from cms_api_client.models import ErrorResponse, LeadPayload, SalePayload, TrackResponse
from cms_api_client.types import UNSET

from ..conftest import TOKEN
from ..support.servers import SUCCESS, Reply

HTML = b"<html><body><h1>500 Internal Server Error</h1></body></html>"
IST = timezone(timedelta(hours=5, minutes=30))


def lead() -> LeadPayload:
    return LeadPayload(event_name="signup_started", customer_external_id="user_42", click_id="id_123")


def sale() -> SalePayload:
    return SalePayload(
        event_name="purchase_completed",
        customer_external_id="user_42",
        invoice_id="inv_987",
        amount=4999,
        currency="USD",
        click_id="id_123",
        timestamp=datetime(2024, 5, 1, 12, 30, tzinfo=IST),
    )


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def test_lead_sync_round_trip(server):
    with AuthenticatedClient(base_url=server.url, token=TOKEN) as api:
        response = track_lead.sync_detailed(client=api, body=lead(), idempotency_key="key-1")
    assert response.status_code == HTTPStatus.OK
    assert isinstance(response.parsed, TrackResponse)
    assert response.parsed.success is True
    assert response.parsed.message == SUCCESS["message"]
    assert response.parsed.data == SUCCESS["data"]
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/track/lead")
    headers = lower(request.headers)
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["content-type"] == "application/json"
    assert headers["idempotency-key"] == "key-1"
    assert request.json == {"eventName": "signup_started", "customerExternalId": "user_42", "clickId": "id_123"}


def test_sale_sync_round_trip(server):
    server.queue(Reply(body={"status": True, "data": "abc"}))
    with AuthenticatedClient(base_url=server.url, token=TOKEN) as api:
        response = track_sale.sync_detailed(client=api, body=sale())
    assert response.status_code == 200
    assert isinstance(response.parsed, TrackResponse)
    assert (response.parsed.status, response.parsed.data, response.parsed.success) == (True, "abc", UNSET)
    (request,) = server.requests
    assert request.path == "/track/sale"
    assert "idempotency-key" not in lower(request.headers)
    assert request.json == {
        "eventName": "purchase_completed",
        "customerExternalId": "user_42",
        "invoiceId": "inv_987",
        "amount": 4999,
        "currency": "USD",
        "clickId": "id_123",
        "timestamp": "2024-05-01T12:30:00+05:30",
    }


@pytest.mark.parametrize(
    ("operation", "body", "path"),
    [(track_lead, lead, "/track/lead"), (track_sale, sale, "/track/sale")],
    ids=["lead", "sale"],
)
def test_asyncio_round_trip(server, operation, body, path):
    async def send() -> object:
        async with AuthenticatedClient(base_url=server.url, token=TOKEN) as api:
            return await operation.asyncio_detailed(client=api, body=body(), idempotency_key="key-2")

    response = asyncio.run(send())
    assert response.status_code == 200
    assert isinstance(response.parsed, TrackResponse)
    assert response.parsed.to_dict() == SUCCESS
    (request,) = server.requests
    assert request.path == path
    assert lower(request.headers)["authorization"] == f"Bearer {TOKEN}"
    assert lower(request.headers)["idempotency-key"] == "key-2"
    assert request.json == body().to_dict()


def test_sync_returns_only_the_parsed_body(server):
    with AuthenticatedClient(base_url=server.url, token=TOKEN) as api:
        parsed = track_lead.sync(client=api, body=lead())
    assert isinstance(parsed, TrackResponse)
    assert parsed.data == SUCCESS["data"]


def test_plain_client_sends_no_authorization(server):
    with Client(base_url=server.url) as api:
        response = track_lead.sync_detailed(client=api, body=lead())
    assert response.status_code == 200
    assert "authorization" not in lower(server.requests[0].headers)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504, 418])
def test_error_json_parses_as_error_response(server, status):
    server.queue(
        Reply(status=status, body={"success": False, "error": "E", "type": "t", "statusCode": status, "details": {}})
    )
    with AuthenticatedClient(base_url=server.url, token=TOKEN) as api:
        response = track_lead.sync_detailed(client=api, body=lead())
    assert response.status_code == status
    assert isinstance(response.parsed, ErrorResponse)
    assert (response.parsed.error, response.parsed.type_, response.parsed.status_code) == ("E", "t", status)
    assert response.parsed.details.to_dict() == {}


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(status=500, body=HTML), id="html-500"),
        pytest.param(Reply(status=502, body=b""), id="empty-502"),
        pytest.param(Reply(status=200, body=HTML), id="html-200"),
        pytest.param(Reply(status=200, body=[1, 2]), id="list-200"),
        pytest.param(Reply(status=400, body=None), id="null-400"),
    ],
)
def test_unparseable_body_gives_parsed_none(server, reply):
    server.queue(reply)
    with AuthenticatedClient(base_url=server.url, token=TOKEN) as api:
        response = track_sale.sync_detailed(client=api, body=sale())
    assert response.status_code == reply.status
    assert response.parsed is None
    assert response.content == reply.encoded()[0]


def test_html_500_asyncio(server):
    server.queue(Reply(status=500, body=HTML))

    async def send() -> object:
        async with AuthenticatedClient(base_url=server.url, token=TOKEN) as api:
            return await track_lead.asyncio_detailed(client=api, body=lead())

    response = asyncio.run(send())
    assert (response.status_code, response.parsed, response.content) == (500, None, HTML)


@pytest.mark.parametrize(
    "payload",
    [
        lead(),
        LeadPayload(event_name="kyc_completed", customer_external_id="user_42"),
        LeadPayload(
            event_name="lead_captured",
            customer_external_id="user_42",
            click_id="id_123",
            mode="deferred",
            customer_name="Jane Doe",
            customer_email="jane@example.com",
            customer_avatar="https://cdn.example.com/jane.png",
            timestamp=datetime(2024, 5, 1, 12, 30, tzinfo=IST),
        ),
        sale(),
        SalePayload(event_name="p", customer_external_id="u", invoice_id="i", amount=0, currency="EUR"),
    ],
    ids=["lead", "lead-later", "lead-all", "sale", "sale-minimal"],
)
def test_payload_dict_round_trip(payload):
    wire = payload.to_dict()
    assert None not in wire.values()
    assert UNSET not in wire.values()
    assert type(payload).from_dict(wire) == payload


def test_payload_uses_camel_case_and_leaves_out_unset_fields():
    assert LeadPayload(event_name="e", customer_external_id="c").to_dict() == {
        "eventName": "e",
        "customerExternalId": "c",
    }
    assert sorted(sale().to_dict()) == [
        "amount",
        "clickId",
        "currency",
        "customerExternalId",
        "eventName",
        "invoiceId",
        "timestamp",
    ]


def test_lead_mode_outside_the_enum_is_refused_by_the_model():
    with pytest.raises(TypeError):
        LeadPayload.from_dict({"eventName": "e", "customerExternalId": "c", "mode": "instant"})


def test_track_response_keeps_unknown_fields():
    parsed = TrackResponse.from_dict({"success": True, "timestamp": "T", "requestId": "r1"})
    assert parsed.timestamp == "T"
    assert parsed["requestId"] == "r1"
    assert parsed.to_dict() == {"success": True, "timestamp": "T", "requestId": "r1"}
