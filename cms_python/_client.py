"""`CMSClient`: the synchronous face."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Concatenate, ParamSpec

import httpx
from cms_api_client import Client

from ._attempts import Attempts, Done, GaveUp, Wait
from ._base import MAX_IN_FLIGHT, ClientBase, tracking_method
from ._http import OwnClient, ThroughClient, UnreadableBody
from ._operations import ApiResponse, TrackRequest
from ._requests import build_lead, build_sale
from ._results import status_only
from ._types import TrackError, TrackResult

_P = ParamSpec("_P")


def _method(
    name: str, build: Callable[_P, TrackRequest[Any] | TrackError]
) -> Callable[Concatenate[CMSClient, _P], TrackResult]:
    def method(self: CMSClient, /, *args: _P.args, **kwargs: _P.kwargs) -> TrackResult:
        return self._send(build(*args, **kwargs))

    return tracking_method(f"CMSClient.{name}", build, method)


class CMSClient(ClientBase[httpx.Client]):
    """Tracks leads and sales with CutMeShort. Methods return result dicts and never raise for API,
    network or value errors.

    Args:
        token: your API token; defaults to the `CMS_BEARER_TOKEN` environment variable. Neither: `ValueError`.
        host: the API's base URL; defaults to `CMS_HOST`, then `https://api.cme.sh`. Plain `http://` is
            refused (`ValueError`) unless the host is loopback.
        timeout: seconds for each of connect, read and write of one attempt (or an `httpx.Timeout`).
        max_retries: how many times a failed attempt is retried when retrying is safe (0: never).
        http_client: your own `httpx.Client` (proxies, custom CA bundle, test transport); the SDK sends
            through its transport and event hooks but keeps its own base URL, headers, timeout and auth,
            keeps no cookies, never follows redirects, and does not close it.

    `host`, `timeout` and `max_retries` are read-only: make another client for other settings. Use it as a
    context manager, or call `close()`, to release its connections.
    """

    def _connect(self, settings: dict[str, Any], http_client: httpx.Client | None) -> Client:
        # Threads beyond these wait here, outside httpx, so no pool timeout runs out while they queue up.
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        transport = ThroughClient(http_client) if http_client is not None else None
        return Client(base_url=self.host).set_httpx_client(OwnClient(**settings, transport=transport))

    def _is_closed(self) -> bool:
        return self._api.get_httpx_client().is_closed

    track_lead = _method("track_lead", build_lead)
    track_sale = _method("track_sale", build_sale)

    def _send(self, request: TrackRequest[Any] | TrackError) -> TrackResult:
        if not isinstance(request, TrackRequest):
            return request
        attempts = self._attempts(request)
        while True:
            decision = attempts.decide(self._attempt(request, attempts))
            if not isinstance(decision, Wait):
                return decision.result
            time.sleep(decision.seconds)  # holding no slot

    def _deliver(self, request: TrackRequest[Any]) -> Done | GaveUp:
        """One attempt and its outcome, never a retry: for the `Outbox`, which schedules its own."""
        attempts = Attempts(request, max_retries=0, token=self._token)
        decision = attempts.decide(self._attempt(request, attempts))
        assert not isinstance(decision, Wait)  # no retries left after the first attempt
        return decision

    def _attempt(self, request: TrackRequest[Any], attempts: Attempts) -> ApiResponse | httpx.HTTPError:
        """One send, in one of the client's slots; `attempts` starts timing it once it has one."""
        with self._slots:
            attempts.start()
            try:
                return request.operation.send(self._api, request)
            except UnreadableBody as exc:
                return status_only(exc)
            except httpx.HTTPError as exc:
                return exc

    def close(self) -> None:
        """Release the connections (a caller's own `http_client` stays open)."""
        self._api.get_httpx_client().close()

    def __enter__(self) -> CMSClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
