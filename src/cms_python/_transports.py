"""Send the SDK's requests through a caller's own httpx client without changing that client."""

from __future__ import annotations

import httpx


class ThroughClient(httpx.BaseTransport):
    """Uses the caller's `httpx.Client` (its transport, proxies, TLS settings, auth, event hooks).

    The SDK's base URL, headers and timeout still apply, and redirects are never followed.
    Closing the SDK's client does not close the caller's.
    """

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._client.send(request, stream=True, follow_redirects=False)
        return httpx.Response(response.status_code, headers=response.headers, stream=response.stream)


class ThroughAsyncClient(httpx.AsyncBaseTransport):
    """The `httpx.AsyncClient` counterpart of `ThroughClient`."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._client.send(request, stream=True, follow_redirects=False)
        return httpx.Response(response.status_code, headers=response.headers, stream=response.stream)
