"""`Sandbox`: an in-memory CutMeShort tracking API with the real one's rules, the spec's request checks and fault
injection.

`Sandbox.handle` answers one raw HTTP request; the httpx transports (`Sandbox.transport()`,
`Sandbox.async_transport()`) and the loopback HTTP server (`Sandbox.serve()`) all go through it, so every way of
using the sandbox follows the same rules (`_rules.TrackingApi`). Public names are re-exported by
`cms_python.testing`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import httpx

from .._async_client import AsyncCMSClient
from .._client import CMSClient
from ._faults import Fault
from ._records import Account, ClickSummary, Lead, RecordedRequest, Reply, Sale, attributions
from ._rules import TrackingApi
from ._transports import AsyncSandboxTransport, SandboxTransport

#: The base URL of `Sandbox.client()`: `.invalid` can never resolve, so nothing leaves the process by mistake.
SANDBOX_HOST = "https://sandbox.cme.sh.invalid"
#: The token `Sandbox.client()` sends when the sandbox was not given one.
SANDBOX_TOKEN = "sandbox-token"  # noqa: S105 - a placeholder that any token-less sandbox accepts


class Sandbox:
    """An in-memory CutMeShort tracking API for tests and local development.

    It checks each request as the real API does: the bearer token (401), the path (404) and method (405), the
    rate limit (429, when `rate_limit` is set), the body against the spec's `LeadPayload` / `SalePayload`
    (422 `validation_error`, with per-field `details`; JSON nested over 100 levels deep is refused whole), then
    the tracking rules:

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

    Each bearer token is an account of its own, as each user is for the real API: invoices, deferred
    associations, `Idempotency-Key`s and the rate limit all count per token.

    Use it through `client()` / `async_client()` (SDK clients wired to it), `transport()` /
    `async_transport()` (for your own httpx client), or `serve()` (a real HTTP server on 127.0.0.1).
    Inspect what happened with `leads`, `sales`, `requests`, `associations` and `attributions()` (every
    token's), or `account(token)` (one token's). Thread-safe.
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
        self._lock = threading.Lock()
        self._api = TrackingApi(token, rate_limit, clock)
        self._faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []

    @property
    def token(self) -> str | None:
        """The only bearer token accepted, or None for any."""
        return self._api.token

    @property
    def rate_limit(self) -> int | None:
        """Requests per minute per token, or None for no limit."""
        return self._api.rate_limit

    def __repr__(self) -> str:
        return f"Sandbox(leads={len(self._api.leads)}, sales={len(self._api.sales)}, requests={len(self._requests)})"

    # -- what was recorded -------------------------------------------------------------------------------------

    @property
    def leads(self) -> list[Lead]:
        """The recorded leads of every token, oldest first."""
        with self._lock:
            return list(self._api.leads)

    @property
    def sales(self) -> list[Sale]:
        """The recorded sales of every token, oldest first; each invoice once per token."""
        with self._lock:
            return list(self._api.sales)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, oldest first, including rejected ones (see `RecordedRequest.status`)."""
        with self._lock:
            return list(self._requests)

    @property
    def associations(self) -> dict[str, str]:
        """The deferred associations of every token: customerExternalId -> clickId. Should two tokens associate
        the same customer id, the one made last is here; `account(token).associations` has each token's."""
        with self._lock:
            # Only a deferred lead makes an association, and nothing changes one once made.
            return {lead.customer_external_id: lead.click_id for lead in self._api.leads if lead.deferred}

    def attributions(self) -> dict[str, ClickSummary]:
        """Per clickId, over every token: how many leads and sales it was credited with, revenue per currency,
        and the customers."""
        with self._lock:
            leads, sales = list(self._api.leads), list(self._api.sales)
        return attributions(leads, sales)

    def account(self, token: str) -> Account:
        """What requests with this bearer token recorded (an empty `Account` for a token never seen)."""
        with self._lock:
            books = self._api.books.get(token)
            return Account([], [], {}) if books is None else books.account()

    # -- faults ------------------------------------------------------------------------------------------------

    def fail_next(self, status: int = 503, times: int = 1, *, retry_after: float | None = None) -> None:
        """Answer the next `times` requests with `status` (an error body of type `sandbox_fault`) without
        processing them; `retry_after` adds a `Retry-After` header (0 makes the SDK retry at once)."""
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status, 400 to 599")
        if retry_after is not None and not (0 <= retry_after < math.inf):
            raise ValueError("retry_after must be a non-negative number of seconds")
        self._add_faults(times, Fault("fail", status=status, retry_after=retry_after))

    def drop_next(self, times: int = 1, *, after_processing: bool = False) -> None:
        """Close the connection of the next `times` requests without an answer.

        `after_processing=True` first records the event, as when an answer is lost on the way back: a retry
        with the same `Idempotency-Key` then gets the replayed answer. The in-process transports raise
        `httpx.RemoteProtocolError`, as httpx does when a server hangs up.
        """
        self._add_faults(times, Fault("drop", after_processing=after_processing))

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Process the next `times` requests at once but hold their answers back for `seconds`.

        Over the in-process transports a delay longer than the client's read timeout raises
        `httpx.ReadTimeout` once the timeout has passed, as a real network would; the event stays recorded.
        """
        if not 0 <= seconds < math.inf:
            raise ValueError("seconds must be a non-negative number")
        self._add_faults(times, Fault("delay", seconds=seconds))

    def _add_faults(self, times: int, fault: Fault) -> None:
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError("times must be an int >= 1")
        with self._lock:
            self._faults.extend([fault] * times)

    # -- ways in -----------------------------------------------------------------------------------------------

    def transport(self) -> httpx.BaseTransport:
        """An httpx transport answered by this sandbox: `httpx.Client(transport=sandbox.transport())`."""
        return SandboxTransport(self.handle)

    def async_transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport for `httpx.AsyncClient`, answered by this sandbox."""
        return AsyncSandboxTransport(self.handle)

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
        `http://127.0.0.1:54321` (port 0: any free port; `host="::1"` serves IPv6). The server stops when the
        block ends.

        `log` receives one line per request. `OSError` if the address cannot be bound.
        """
        from ._server import SandboxServer  # noqa: PLC0415 - http.server only when serving

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
                reply = self._api.answer(method, path, headers, body)
            else:
                reply = fault.apply(self._api.answer(method, path, headers, body) if fault.processes else None)
            status = None if reply.dropped else reply.status
            self._requests.append(RecordedRequest(method.upper(), path, headers, body, status, reply.body))
        return reply
