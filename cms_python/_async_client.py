"""`AsyncCMSClient`: the asyncio face. Everything but sending and sleeping is shared with `CMSClient`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec

import httpx
from cms_api_client import Client

from ._attempts import Attempts, Wait
from ._base import MAX_IN_FLIGHT, ClientBase, tracking_method
from ._http import OwnAsyncClient, ThroughAsyncClient, UnreadableBody
from ._operations import ApiResponse, TrackRequest
from ._requests import build_lead, build_sale
from ._results import status_only
from ._types import TrackError, TrackResult

_P = ParamSpec("_P")


def _method(
    name: str, build: Callable[_P, TrackRequest[Any] | TrackError]
) -> Callable[Concatenate[AsyncCMSClient, _P], Coroutine[Any, Any, TrackResult]]:
    async def method(self: AsyncCMSClient, /, *args: _P.args, **kwargs: _P.kwargs) -> TrackResult:
        self._check_loop()
        return await self._send(build(*args, **kwargs))

    return tracking_method(f"AsyncCMSClient.{name}", build, method)


class AsyncCMSClient(ClientBase[httpx.AsyncClient]):
    """`CMSClient` for asyncio: the same arguments, results and rules; `await` its methods.

    `http_client` takes your own `httpx.AsyncClient`. Use `async with`, or `await aclose()`. A client belongs
    to the event loop it is first used in: using it from another one raises `RuntimeError`, and sends nothing.
    """

    def _connect(self, settings: dict[str, Any], http_client: httpx.AsyncClient | None) -> Client:
        # Waiting here is outside httpx, so no pool timeout runs out while a flood of calls queues up.
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._binding = threading.Lock()  # two loops in two threads may make their first call at once
        transport = ThroughAsyncClient(http_client) if http_client is not None else None
        return Client(base_url=self.host).set_async_httpx_client(OwnAsyncClient(**settings, transport=transport))

    def _is_closed(self) -> bool:
        return self._api.get_async_httpx_client().is_closed

    track_lead = _method("track_lead", build_lead)
    track_sale = _method("track_sale", build_sale)

    def _check_loop(self) -> None:
        """Bind the client to the running loop on first use; refuse any other loop after that.

        httpx's connections, and the slots, work only in the loop that made them: from another loop a call
        would fail after sending, or appear to work and break the first loop's calls.
        """
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        with self._binding:
            if self._loop is None:
                self._loop = loop
                return
        state = "closed" if self._loop.is_closed() else "still open"
        raise RuntimeError(
            f"This {type(self).__name__} belongs to the event loop it was first used in ({state}), not the running "
            "one: create one client per event loop, inside it"
        )

    async def _send(self, request: TrackRequest[Any] | TrackError) -> TrackResult:
        if not isinstance(request, TrackRequest):
            return request
        attempts = self._attempts(request)
        while True:
            decision = attempts.decide(await self._attempt(request, attempts))
            if not isinstance(decision, Wait):
                return decision.result
            await asyncio.sleep(decision.seconds)  # holding no slot

    async def _attempt(self, request: TrackRequest[Any], attempts: Attempts) -> ApiResponse | httpx.HTTPError:
        """One send, in one of the client's slots; `attempts` starts timing it once it has one."""
        async with self._slots:
            attempts.start()
            try:
                return await request.operation.send_async(self._api, request)
            except UnreadableBody as exc:
                return status_only(exc)
            except httpx.HTTPError as exc:
                return exc

    async def aclose(self) -> None:
        """Release the connections (a caller's own `http_client` stays open)."""
        await self._api.get_async_httpx_client().aclose()

    async def __aenter__(self) -> AsyncCMSClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()
