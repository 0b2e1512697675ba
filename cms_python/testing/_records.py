"""What the sandbox answers and what it records: `Reply`, `RecordedRequest`, `Lead`, `Sale`, `ClickSummary`,
`Account`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

IDEMPOTENCY_HEADER = "idempotency-key"
JSON_CONTENT_TYPE = "application/json"
ClickIdSource = Literal["request", "association"]


@dataclass(frozen=True)
class Reply:
    """The sandbox's answer to one request.

    `body` is None only when `dropped`: the connection closes without an answer. `delay`: seconds to hold the
    answer back (the request was already processed).
    """

    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    dropped: bool = False

    @property
    def content(self) -> bytes:
        """The body as sent: JSON, UTF-8."""
        return b"" if self.body is None else json.dumps(self.body).encode()


def error_reply(
    status: int,
    message: str,
    kind: str,
    details: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """An answer in the API's error shape (`ErrorResponse`); `details` are per-field problems."""
    body: dict[str, Any] = {"success": False, "error": message, "type": kind, "statusCode": status}
    if details is not None:
        body["details"] = details
    return Reply(status, body, {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the sandbox received it, whatever became of it.

    `headers` have lower-case names. `status` is what the sandbox answered, None when it sent no answer
    (`drop_next`). `response` is the JSON body it answered with.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None
    response: dict[str, Any] | None

    @property
    def json(self) -> Any:
        """The body parsed as JSON (`ValueError` if it is not JSON)."""
        return json.loads(self.body)

    @property
    def idempotency_key(self) -> str | None:
        """The `Idempotency-Key` header, if sent."""
        return self.headers.get(IDEMPOTENCY_HEADER)


@dataclass(frozen=True)
class Lead:
    """A recorded lead. `payload` is the body as received (camelCase keys).

    `click_id` is the click it is attributed to: from the request, or (`click_id_source == "association"`)
    from the customer's earlier deferred lead. `deferred`: this lead stored that association (`mode: deferred`).
    `timestamp`: the payload's, or when the sandbox received it.
    """

    id: str
    event_name: str
    customer_external_id: str
    click_id: str
    click_id_source: ClickIdSource
    deferred: bool
    timestamp: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Sale:
    """A recorded sale (each invoice once). `payload` is the body as received (camelCase keys); `amount` in cents.

    `click_id` and `click_id_source` as for `Lead`.
    """

    id: str
    event_name: str
    customer_external_id: str
    invoice_id: str
    amount: int
    currency: str
    click_id: str
    click_id_source: ClickIdSource
    timestamp: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class ClickSummary:
    """What one click was credited with: leads, sales, revenue in cents per currency, and the customers."""

    click_id: str
    leads: int
    sales: int
    revenue: dict[str, int]
    customers: tuple[str, ...]


@dataclass(frozen=True)
class Account:
    """What the sandbox recorded for one bearer token (`Sandbox.account(token)`), as the real API keeps each
    user's data apart: its leads and sales (oldest first; each invoice once) and its deferred associations
    (customerExternalId -> clickId)."""

    leads: list[Lead]
    sales: list[Sale]
    associations: dict[str, str]

    def attributions(self) -> dict[str, ClickSummary]:
        """Per clickId: how many leads and sales it was credited with, revenue per currency, and the customers."""
        return attributions(self.leads, self.sales)


def attributions(leads: Sequence[Lead], sales: Sequence[Sale]) -> dict[str, ClickSummary]:
    """Per clickId of these events: leads, sales, revenue per currency and customers, in order of appearance."""
    events: list[Lead | Sale] = [*leads, *sales]
    summaries = {}
    for click_id in dict.fromkeys(event.click_id for event in events):
        revenue: dict[str, int] = {}
        for sale in sales:
            if sale.click_id == click_id:
                revenue[sale.currency] = revenue.get(sale.currency, 0) + sale.amount
        summaries[click_id] = ClickSummary(
            click_id,
            leads=sum(lead.click_id == click_id for lead in leads),
            sales=sum(sale.click_id == click_id for sale in sales),
            revenue=revenue,
            customers=tuple(
                dict.fromkeys(event.customer_external_id for event in events if event.click_id == click_id)
            ),
        )
    return summaries
