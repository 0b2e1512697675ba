"""The tracking API's rules: authentication, rate limit, request checks, idempotency, leads and sales.

`TrackingApi.answer` turns one request into a `Reply`; it holds no lock and knows nothing of faults or of how
the request arrived (`Sandbox` adds those). Everything a token records is its own (`Books`): another token
neither sees its invoices, associations and idempotency keys nor shares its rate limit, as with the real API,
where each token belongs to one user.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .._spec import load_spec
from ._records import (
    IDEMPOTENCY_HEADER,
    JSON_CONTENT_TYPE,
    Account,
    ClickIdSource,
    Lead,
    Reply,
    Sale,
    error_reply,
)
from ._schema import Validator

SUCCESS_MESSAGE = "Event tracked successfully"
#: How long the rate limit's window is, in seconds.
RATE_WINDOW = 60.0
#: Request bodies nested deeper than this are refused (a valid one is an object of scalars: depth 1).
MAX_NESTING = 100


class Rejected(Exception):
    """Ends the handling of a request with an error answer."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        details: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.reply = error_reply(status, message, kind, details, headers)


@dataclass
class Books:
    """Everything one token has recorded, and its requests in the rate limit's window."""

    leads: list[Lead] = field(default_factory=list)
    sales: dict[str, Sale] = field(default_factory=dict)
    associations: dict[str, str] = field(default_factory=dict)
    # Idempotency-Key -> (path and canonical body of the first request, its answer)
    idempotent: dict[str, tuple[str, Reply]] = field(default_factory=dict)
    recent: deque[float] = field(default_factory=deque)

    def account(self) -> Account:
        """A copy of what it recorded."""
        return Account(list(self.leads), list(self.sales.values()), dict(self.associations))


@dataclass(frozen=True)
class Route:
    """One endpoint: the spec's schema for its body, and what tracks a valid one."""

    schema: str
    track: Callable[[TrackingApi, Books, dict[str, Any]], Reply]


class TrackingApi:
    """The rules of the real API, over the books of every token. Not thread-safe: `Sandbox` locks around it."""

    def __init__(self, token: str | None, rate_limit: int | None, clock: Callable[[], float]) -> None:
        self.token = token
        self.rate_limit = rate_limit
        self._clock = clock
        self._validator = Validator(load_spec())
        self.books: dict[str, Books] = {}
        # Every token's events in the order recorded, for the sandbox-wide views and the ids.
        self.leads: list[Lead] = []
        self.sales: list[Sale] = []

    def answer(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """The answer to one request (`headers` with lower-case names), recording what it tracks."""
        try:
            return self._process(method, path, headers, body)
        except Rejected as rejected:
            return rejected.reply

    def _process(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        route = ROUTES.get(path)
        if route is None:
            raise Rejected(404, f"No such endpoint: {path}", "not_found")
        if method.upper() != "POST":
            raise Rejected(
                405, f"{method.upper()} is not allowed on {path}", "method_not_allowed", headers={"Allow": "POST"}
            )
        books = self._authenticate(headers.get("authorization", ""))
        self._count_against_limit(books)
        key = self._idempotency_key(headers)
        payload = _parse(body)
        fingerprint = f"{path} {json.dumps(payload, sort_keys=True)}"
        if key is not None and key in books.idempotent:
            first_fingerprint, first_reply = books.idempotent[key]
            if first_fingerprint != fingerprint:
                raise Rejected(
                    409, "This Idempotency-Key was already used with a different request", "idempotency_key_reused"
                )
            return Reply(first_reply.status, first_reply.body, {**first_reply.headers, "Idempotent-Replayed": "true"})
        problems = self._validator.problems(self._validator.resolve(f"#/components/schemas/{route.schema}"), payload)
        if problems:
            raise Rejected(422, "Validation failed", "validation_error", problems)
        try:
            reply = route.track(self, books, payload)
        except Rejected as rejected:
            reply = rejected.reply
        if key is not None:
            books.idempotent[key] = (fingerprint, reply)
        return reply

    def _authenticate(self, authorization: str) -> Books:
        scheme, _, credentials = authorization.strip().partition(" ")
        token = credentials.strip()
        if scheme.lower() != "bearer" or not token:
            raise Rejected(401, "Missing bearer token: send 'Authorization: Bearer <token>'", "unauthorized")
        if self.token is not None and token != self.token:
            raise Rejected(401, "Invalid API token", "unauthorized")
        return self.books.setdefault(token, Books())

    def _count_against_limit(self, books: Books) -> None:
        if self.rate_limit is None:
            return
        now = self._clock()
        recent = books.recent
        while recent and recent[0] <= now - RATE_WINDOW:
            recent.popleft()
        if len(recent) >= self.rate_limit:
            wait = max(1, math.ceil(recent[0] + RATE_WINDOW - now))
            raise Rejected(
                429,
                f"Rate limit exceeded: {self.rate_limit} requests per minute",
                "rate_limited",
                headers={"Retry-After": str(wait)},
            )
        recent.append(now)

    def _idempotency_key(self, headers: Mapping[str, str]) -> str | None:
        key = headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            return None
        schema = self._validator.resolve("#/components/parameters/IdempotencyKey")["schema"]
        problems = self._validator.problems(schema, key, "Idempotency-Key")
        if problems:
            raise Rejected(422, "Validation failed", "validation_error", problems)
        return key

    def track_lead(self, books: Books, payload: dict[str, Any]) -> Reply:
        customer = payload["customerExternalId"]
        click_id: str | None = payload.get("clickId")
        deferred = payload.get("mode") == "deferred"
        associated = books.associations.get(customer)
        if click_id is not None and associated is not None:
            raise Rejected(
                409,
                f"Customer {customer!r} is already attributed to a click through a deferred lead: "
                "send later events without clickId",
                "duplicate_attribution",
            )
        if click_id is None and deferred:
            raise Rejected(400, 'mode "deferred" needs the clickId to associate with the customer', "missing_click_id")
        source: ClickIdSource = "request"
        if click_id is None:
            click_id, source = _resolve(books, customer), "association"
        if deferred:
            books.associations[customer] = click_id
        lead = Lead(
            id=f"lead_{len(self.leads) + 1}",
            event_name=payload["eventName"],
            customer_external_id=customer,
            click_id=click_id,
            click_id_source=source,
            deferred=deferred,
            timestamp=payload.get("timestamp") or _now(),
            payload=payload,
        )
        books.leads.append(lead)
        self.leads.append(lead)
        return _success(
            {
                "id": lead.id,
                "type": "lead",
                "eventName": lead.event_name,
                "customerExternalId": customer,
                "clickId": click_id,
                "clickIdSource": source,
                "deferred": deferred,
                "timestamp": lead.timestamp,
                "replayed": False,
            }
        )

    def track_sale(self, books: Books, payload: dict[str, Any]) -> Reply:
        invoice_id = payload["invoiceId"]
        earlier = books.sales.get(invoice_id)
        if earlier is not None:
            if earlier.payload != payload:
                raise Rejected(
                    409, f"Invoice {invoice_id!r} was already recorded with different details", "duplicate_invoice"
                )
            return _success({**_sale_data(earlier), "replayed": True})
        customer = payload["customerExternalId"]
        click_id: str | None = payload.get("clickId")
        source: ClickIdSource = "request"
        if click_id is None:
            click_id, source = _resolve(books, customer), "association"
        sale = Sale(
            id=f"sale_{len(self.sales) + 1}",
            event_name=payload["eventName"],
            customer_external_id=customer,
            invoice_id=invoice_id,
            amount=int(payload["amount"]),
            currency=payload["currency"],
            click_id=click_id,
            click_id_source=source,
            timestamp=payload.get("timestamp") or _now(),
            payload=payload,
        )
        books.sales[invoice_id] = sale
        self.sales.append(sale)
        return _success({**_sale_data(sale), "replayed": False})


#: The endpoints, by path.
ROUTES: dict[str, Route] = {
    "/track/lead": Route("LeadPayload", TrackingApi.track_lead),
    "/track/sale": Route("SalePayload", TrackingApi.track_sale),
}


def _resolve(books: Books, customer: str) -> str:
    """The click a customer's deferred lead associated them with."""
    associated = books.associations.get(customer)
    if associated is None:
        raise Rejected(
            400,
            f"clickId is required: customer {customer!r} has no deferred association to resolve it from",
            "missing_click_id",
        )
    return associated


def _parse(body: bytes) -> Any:
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:  # json's parser gives up on deep nesting (a stack overflow would crash the process)
        raise _nested_too_deep() from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Rejected(
            422, "Validation failed", "validation_error", {"body": f"must be a JSON object: {exc}"}
        ) from None
    if _too_deep(payload):
        raise _nested_too_deep()
    return payload


def _nested_too_deep() -> Rejected:
    problem = f"must be nested at most {MAX_NESTING} levels deep"
    return Rejected(422, "Validation failed", "validation_error", {"body": problem})


def _too_deep(value: Any) -> bool:
    """Whether arrays and objects are nested deeper than `MAX_NESTING` in `value`, found without recursion
    (what parses near Python's recursion limit could not be serialized again for the idempotency check)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_NESTING:
                return True
            pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _sale_data(sale: Sale) -> dict[str, Any]:
    return {
        "id": sale.id,
        "type": "sale",
        "eventName": sale.event_name,
        "customerExternalId": sale.customer_external_id,
        "invoiceId": sale.invoice_id,
        "amount": sale.amount,
        "currency": sale.currency,
        "clickId": sale.click_id,
        "clickIdSource": sale.click_id_source,
        "timestamp": sale.timestamp,
    }


def _success(data: dict[str, Any]) -> Reply:
    return Reply(200, {"success": True, "message": SUCCESS_MESSAGE, "data": data}, {"Content-Type": JSON_CONTENT_TYPE})
