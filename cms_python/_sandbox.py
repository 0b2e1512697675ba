"""An in-memory CutMeShort tracking API: the rules of the real one, the spec's request checks, fault injection.

`Sandbox.handle` answers one raw HTTP request; the httpx transports (`Sandbox.transport()`,
`Sandbox.async_transport()`) and the loopback HTTP server (`Sandbox.serve()`, in `_sandbox_server`) all go
through it, so every way of using the sandbox follows the same rules. Public names are re-exported by
`cms_python.testing`.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Literal

import httpx

from ._async_client import AsyncCMSClient
from ._client import CMSClient
from ._schema import Validator, load_spec

#: The base URL of `Sandbox.client()`: `.invalid` can never resolve, so nothing leaves the process by mistake.
SANDBOX_HOST = "https://sandbox.cme.sh.invalid"
#: The token `Sandbox.client()` sends when the sandbox was not given one.
SANDBOX_TOKEN = "sandbox-token"  # noqa: S105 - a placeholder that any token-less sandbox accepts
SUCCESS_MESSAGE = "Event tracked successfully"
#: How long the rate limit's window is, in seconds.
RATE_WINDOW = 60.0

_ROUTES = {"/track/lead": "LeadPayload", "/track/sale": "SalePayload"}
_IDEMPOTENCY_HEADER = "idempotency-key"
_JSON = "application/json"
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
        return self.headers.get(_IDEMPOTENCY_HEADER)


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
class _Fault:
    """What `fail_next`, `drop_next` or `delay_next` does to one request."""

    kind: Literal["fail", "drop", "delay"]
    status: int = 0
    retry_after: float | None = None
    seconds: float = 0.0
    after_processing: bool = False

    @property
    def processes(self) -> bool:
        """Whether the request is handled as usual (recorded, answer kept for its key) before the fault acts."""
        return self.kind == "delay" or self.after_processing

    def apply(self, reply: Reply | None) -> Reply:
        """The answer sent instead of `reply` (None when the request was not processed)."""
        if self.kind == "fail":
            try:
                phrase = HTTPStatus(self.status).phrase
            except ValueError:
                phrase = "Error"
            headers = {} if self.retry_after is None else {"Retry-After": f"{self.retry_after:g}"}
            message = f"Injected failure: HTTP {self.status} {phrase}"
            return error_reply(self.status, message, "sandbox_fault", None, headers)
        if self.kind == "drop" or reply is None:
            return Reply(0, None, dropped=True)
        return replace(reply, delay=self.seconds)


class _Rejected(Exception):
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


class Sandbox:
    """An in-memory CutMeShort tracking API for tests and local development.

    It checks each request as the real API does: the bearer token (401), the path (404) and method (405), the
    rate limit (429, when `rate_limit` is set), the body against the spec's `LeadPayload` / `SalePayload`
    (422 `validation_error`, with per-field `details`), then the tracking rules:

    - a lead needs `clickId`, unless the customer has a deferred association; `mode: "deferred"` (with
      `clickId`) stores that association, and a later lead for that customer that sends `clickId` again is a
      409 `duplicate_attribution`. No `clickId` and no association, or `mode: "deferred"` without `clickId`:
      400 `missing_click_id`.
    - a sale is recorded once per `invoiceId`: the identical sale again answers 200 with `"replayed": true`
      (recorded once); the same `invoiceId` with a different sale is a 409 `duplicate_invoice`. Without
      `clickId` it is attributed through the customer's deferred association (none: 400 `missing_click_id`).
    - a repeated `Idempotency-Key` with the same body replays the first answer (header
      `Idempotent-Replayed: true`, recorded once); with another body it is a 409 `idempotency_key_reused`.
      An answer is kept for its key once the request got past authentication, the rate limit and validation
      (as Stripe does), so a refused body does not use up its key.

    Args:
        token: accept only this bearer token; by default any non-empty one.
        rate_limit: requests per minute per token; past it, 429 with `Retry-After` (seconds). None: no limit.
        clock: seconds from a monotonic clock, for the rate limit; tests may pass a fake one.

    Use it through `client()` / `async_client()` (SDK clients wired to it), `transport()` /
    `async_transport()` (for your own httpx client), or `serve()` (a real HTTP server on 127.0.0.1).
    Inspect what happened with `leads`, `sales`, `requests`, `associations` and `attributions()`.
    Thread-safe.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        rate_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ValueError("token must be a non-empty str, or None to accept any token")
        if rate_limit is not None and (
            isinstance(rate_limit, bool) or not isinstance(rate_limit, int) or rate_limit < 1
        ):
            raise ValueError("rate_limit must be an int >= 1 (requests per minute), or None for no limit")
        self.token = token
        self.rate_limit = rate_limit
        self._clock = clock
        self._lock = threading.Lock()
        self._validator = Validator(load_spec())
        self._faults: deque[_Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._leads: list[Lead] = []
        self._sales: dict[str, Sale] = {}
        self._associations: dict[str, str] = {}
        # (token, Idempotency-Key) -> (path and canonical body of the first request, its answer)
        self._idempotent: dict[tuple[str, str], tuple[str, Reply]] = {}
        self._recent: defaultdict[str, deque[float]] = defaultdict(deque)

    def __repr__(self) -> str:
        return f"Sandbox(leads={len(self._leads)}, sales={len(self._sales)}, requests={len(self._requests)})"

    # -- what was recorded -------------------------------------------------------------------------------------

    @property
    def leads(self) -> list[Lead]:
        """The recorded leads, oldest first."""
        with self._lock:
            return list(self._leads)

    @property
    def sales(self) -> list[Sale]:
        """The recorded sales, oldest first; each invoice once."""
        with self._lock:
            return list(self._sales.values())

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, oldest first, including rejected ones (see `RecordedRequest.status`)."""
        with self._lock:
            return list(self._requests)

    @property
    def associations(self) -> dict[str, str]:
        """The deferred associations: customerExternalId -> clickId."""
        with self._lock:
            return dict(self._associations)

    def attributions(self) -> dict[str, ClickSummary]:
        """Per clickId: how many leads and sales it was credited with, revenue per currency, and the customers."""
        with self._lock:
            leads, sales = list(self._leads), list(self._sales.values())
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

    # -- faults ------------------------------------------------------------------------------------------------

    def fail_next(self, status: int = 503, times: int = 1, *, retry_after: float | None = None) -> None:
        """Answer the next `times` requests with `status` (an error body of type `sandbox_fault`) without
        processing them; `retry_after` adds a `Retry-After` header (0 makes the SDK retry at once)."""
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status, 400 to 599")
        if retry_after is not None and not (0 <= retry_after < math.inf):
            raise ValueError("retry_after must be a non-negative number of seconds")
        self._add_faults(times, _Fault("fail", status=status, retry_after=retry_after))

    def drop_next(self, times: int = 1, *, after_processing: bool = False) -> None:
        """Close the connection of the next `times` requests without an answer.

        `after_processing=True` first records the event, as when an answer is lost on the way back: a retry
        with the same `Idempotency-Key` then gets the replayed answer. The in-process transports raise
        `httpx.RemoteProtocolError`, as httpx does when a server hangs up.
        """
        self._add_faults(times, _Fault("drop", after_processing=after_processing))

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Process the next `times` requests at once but hold their answers back for `seconds`.

        Over the in-process transports a delay longer than the client's read timeout raises
        `httpx.ReadTimeout` once the timeout has passed, as a real network would; the event stays recorded.
        """
        if not 0 <= seconds < math.inf:
            raise ValueError("seconds must be a non-negative number")
        self._add_faults(times, _Fault("delay", seconds=seconds))

    def _add_faults(self, times: int, fault: _Fault) -> None:
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError("times must be an int >= 1")
        with self._lock:
            self._faults.extend([fault] * times)

    # -- ways in -----------------------------------------------------------------------------------------------

    def transport(self) -> httpx.BaseTransport:
        """An httpx transport answered by this sandbox: `httpx.Client(transport=sandbox.transport())`."""
        return _Transport(self)

    def async_transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport for `httpx.AsyncClient`, answered by this sandbox."""
        return _AsyncTransport(self)

    def client(
        self, *, token: str | None = None, timeout: float | httpx.Timeout = 10.0, max_retries: int = 2
    ) -> CMSClient:
        """A `CMSClient` wired to this sandbox (host `SANDBOX_HOST`). `token`: the sandbox's own token if it has
        one, else `SANDBOX_TOKEN`. Close it (or use `with`) when done."""
        http_client = httpx.Client(transport=self.transport())
        return CMSClient(
            token or self.token or SANDBOX_TOKEN,
            SANDBOX_HOST,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
        )

    def async_client(
        self, *, token: str | None = None, timeout: float | httpx.Timeout = 10.0, max_retries: int = 2
    ) -> AsyncCMSClient:
        """An `AsyncCMSClient` wired to this sandbox; the arguments are `client()`'s."""
        http_client = httpx.AsyncClient(transport=self.async_transport())
        return AsyncCMSClient(
            token or self.token or SANDBOX_TOKEN,
            SANDBOX_HOST,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
        )

    @contextmanager
    def serve(
        self, port: int = 0, host: str = "127.0.0.1", *, log: Callable[[str], None] | None = None
    ) -> Iterator[str]:
        """Serve this sandbox over HTTP in a background thread; yields the base URL, such as
        `http://127.0.0.1:54321` (port 0: any free port). The server stops when the block ends.

        `log` receives one line per request. `OSError` if the address cannot be bound.
        """
        from ._sandbox_server import SandboxServer  # noqa: PLC0415 - http.server only when serving

        server = SandboxServer(self.handle, host, port, log=log)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="cms-sandbox", daemon=True
        )
        thread.start()
        try:
            yield server.url
        finally:
            server.shutdown()
            server.server_close()
            thread.join()

    # -- the API -----------------------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one HTTP request (`target`: the path, with any query string) and record it.

        The transports and the server call this; a `Reply` with `delay` or `dropped` set asks the caller to
        wait before answering, or to close the connection without answering.
        """
        headers = {name.lower(): value for name, value in headers.items()}
        path = target.split("?", 1)[0]
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            if fault is None:
                reply = self._answer(method, path, headers, body)
            else:
                reply = fault.apply(self._answer(method, path, headers, body) if fault.processes else None)
            status = None if reply.dropped else reply.status
            self._requests.append(RecordedRequest(method.upper(), path, headers, body, status, reply.body))
        return reply

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        try:
            return self._process(method, path, headers, body)
        except _Rejected as rejected:
            return rejected.reply

    def _process(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        schema_name = _ROUTES.get(path)
        if schema_name is None:
            raise _Rejected(404, f"No such endpoint: {path}", "not_found")
        if method.upper() != "POST":
            raise _Rejected(
                405, f"{method.upper()} is not allowed on {path}", "method_not_allowed", headers={"Allow": "POST"}
            )
        token = self._authenticate(headers.get("authorization", ""))
        self._count_against_limit(token)
        key = self._idempotency_key(headers)
        payload = _parse(body)
        fingerprint = f"{path} {json.dumps(payload, sort_keys=True)}"
        if key is not None and (token, key) in self._idempotent:
            first_fingerprint, first_reply = self._idempotent[(token, key)]
            if first_fingerprint != fingerprint:
                raise _Rejected(
                    409,
                    "This Idempotency-Key was already used with a different request",
                    "idempotency_key_reused",
                )
            return Reply(first_reply.status, first_reply.body, {**first_reply.headers, "Idempotent-Replayed": "true"})
        problems = self._validator.problems(self._validator.resolve(f"#/components/schemas/{schema_name}"), payload)
        if problems:
            raise _Rejected(422, "Validation failed", "validation_error", problems)
        try:
            reply = self._track_lead(payload) if path == "/track/lead" else self._track_sale(payload)
        except _Rejected as rejected:
            reply = rejected.reply
        if key is not None:
            self._idempotent[(token, key)] = (fingerprint, reply)
        return reply

    def _authenticate(self, authorization: str) -> str:
        scheme, _, credentials = authorization.strip().partition(" ")
        token = credentials.strip()
        if scheme.lower() != "bearer" or not token:
            raise _Rejected(401, "Missing bearer token: send 'Authorization: Bearer <token>'", "unauthorized")
        if self.token is not None and token != self.token:
            raise _Rejected(401, "Invalid API token", "unauthorized")
        return token

    def _count_against_limit(self, token: str) -> None:
        if self.rate_limit is None:
            return
        now = self._clock()
        recent = self._recent[token]
        while recent and recent[0] <= now - RATE_WINDOW:
            recent.popleft()
        if len(recent) >= self.rate_limit:
            wait = max(1, math.ceil(recent[0] + RATE_WINDOW - now))
            raise _Rejected(
                429,
                f"Rate limit exceeded: {self.rate_limit} requests per minute",
                "rate_limited",
                headers={"Retry-After": str(wait)},
            )
        recent.append(now)

    def _idempotency_key(self, headers: dict[str, str]) -> str | None:
        key = headers.get(_IDEMPOTENCY_HEADER)
        if key is None:
            return None
        schema = self._validator.resolve("#/components/parameters/IdempotencyKey")["schema"]
        problems = self._validator.problems(schema, key, "Idempotency-Key")
        if problems:
            raise _Rejected(422, "Validation failed", "validation_error", problems)
        return key

    def _track_lead(self, payload: dict[str, Any]) -> Reply:
        customer = payload["customerExternalId"]
        click_id: str | None = payload.get("clickId")
        deferred = payload.get("mode") == "deferred"
        associated = self._associations.get(customer)
        if click_id is not None and associated is not None:
            raise _Rejected(
                409,
                f"Customer {customer!r} is already attributed to a click through a deferred lead: "
                "send later events without clickId",
                "duplicate_attribution",
            )
        if click_id is None and deferred:
            raise _Rejected(400, 'mode "deferred" needs the clickId to associate with the customer', "missing_click_id")
        source: ClickIdSource = "request"
        if click_id is None:
            if associated is None:
                raise _Rejected(
                    400,
                    f"clickId is required: customer {customer!r} has no deferred association to resolve it from",
                    "missing_click_id",
                )
            click_id, source = associated, "association"
        if deferred:
            self._associations[customer] = click_id
        lead = Lead(
            id=f"lead_{len(self._leads) + 1}",
            event_name=payload["eventName"],
            customer_external_id=customer,
            click_id=click_id,
            click_id_source=source,
            deferred=deferred,
            timestamp=payload.get("timestamp") or _now(),
            payload=payload,
        )
        self._leads.append(lead)
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

    def _track_sale(self, payload: dict[str, Any]) -> Reply:
        invoice_id = payload["invoiceId"]
        earlier = self._sales.get(invoice_id)
        if earlier is not None:
            if earlier.payload != payload:
                raise _Rejected(
                    409, f"Invoice {invoice_id!r} was already recorded with different details", "duplicate_invoice"
                )
            return _success({**_sale_data(earlier), "replayed": True})
        customer = payload["customerExternalId"]
        click_id: str | None = payload.get("clickId")
        source: ClickIdSource = "request"
        if click_id is None:
            associated = self._associations.get(customer)
            if associated is None:
                raise _Rejected(
                    400,
                    f"clickId is required: customer {customer!r} has no deferred association to resolve it from",
                    "missing_click_id",
                )
            click_id, source = associated, "association"
        sale = Sale(
            id=f"sale_{len(self._sales) + 1}",
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
        self._sales[invoice_id] = sale
        return _success({**_sale_data(sale), "replayed": False})


class _Transport(httpx.BaseTransport):
    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        reply = self._sandbox.handle(request.method, request.url.raw_path.decode(), request.headers, request.read())
        wait, timed_out = _wait(reply, request)
        if wait:
            time.sleep(wait)
        return _response(reply, request, timed_out)


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        reply = self._sandbox.handle(request.method, request.url.raw_path.decode(), request.headers, body)
        wait, timed_out = _wait(reply, request)
        if wait:
            await asyncio.sleep(wait)
        return _response(reply, request, timed_out)


def _wait(reply: Reply, request: httpx.Request) -> tuple[float, bool]:
    """How long to hold the answer back, and whether the client's read timeout runs out first."""
    timeouts = request.extensions.get("timeout") or {}
    read = timeouts.get("read")
    if isinstance(read, int | float) and reply.delay > read:
        return float(read), True
    return reply.delay, False


def _response(reply: Reply, request: httpx.Request, timed_out: bool) -> httpx.Response:
    if timed_out:
        raise httpx.ReadTimeout("The sandbox held the answer back longer than the read timeout", request=request)
    if reply.dropped:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
    return httpx.Response(reply.status, headers=reply.headers, content=reply.content)


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _Rejected(
            422, "Validation failed", "validation_error", {"body": f"must be a JSON object: {exc}"}
        ) from None


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
    return Reply(200, {"success": True, "message": SUCCESS_MESSAGE, "data": data}, {"Content-Type": _JSON})


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
    return Reply(status, body, {"Content-Type": _JSON, **(headers or {})})
