"""`AsyncCMSClient`: the asyncio face. Everything but sending and sleeping is shared with `CMSClient`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec

import httpx
from cms_api_client import Client

from ._attempts import Wait
from ._base import ClientBase, tracking_method
from ._operations import ApiResponse, TrackRequest
from ._requests import build_lead, build_sale
from ._results import status_only
from ._transports import OwnAsyncClient, ThroughAsyncClient, UnreadableBody
from ._types import TrackError, TrackResult

_P = ParamSpec("_P")


def _method(
    name: str, build: Callable[_P, TrackRequest[Any] | TrackError]
) -> Callable[Concatenate[AsyncCMSClient, _P], Coroutine[Any, Any, TrackResult]]:
    async def method(self: AsyncCMSClient, /, *args: _P.args, **kwargs: _P.kwargs) -> TrackResult:
        return await self._send(build(*args, **kwargs))

    return tracking_method(name, build, method)


class AsyncCMSClient(ClientBase[httpx.AsyncClient]):
    """`CMSClient` for asyncio: the same arguments, results and rules; `await` its methods.

    `http_client` takes your own `httpx.AsyncClient`. Use `async with`, or `await aclose()`.
    """

    def _connect(self, settings: dict[str, Any], http_client: httpx.AsyncClient | None) -> Client:
        transport = ThroughAsyncClient(http_client) if http_client is not None else None
        return Client(base_url=self.host).set_async_httpx_client(OwnAsyncClient(**settings, transport=transport))

    def _is_closed(self) -> bool:
        return self._api.get_async_httpx_client().is_closed

    track_lead = _method("track_lead", build_lead)
    track_sale = _method("track_sale", build_sale)

    async def _send(self, request: TrackRequest[Any] | TrackError) -> TrackResult:
        if not isinstance(request, TrackRequest):
            return request
        attempts = self._attempts(request)
        while True:
            attempts.start()
            decision = attempts.decide(await self._attempt(request))
            if not isinstance(decision, Wait):
                return decision.result
            # Imported here, on the first retry: at the top it costs every `import cms_python` (sync users too)
            # ~15 ms, while an async caller has nearly always imported it already.
            import asyncio  # noqa: PLC0415

            await asyncio.sleep(decision.seconds)

    async def _attempt(self, request: TrackRequest[Any]) -> ApiResponse | httpx.HTTPError:
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
