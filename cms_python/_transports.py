"""The SDK's own httpx clients, and sending its requests through a caller's httpx client without changing it."""

from __future__ import annotations

from typing import Any

import httpx

#: More distinct relative paths than the API has: past this, paths are joined with `base_url` per request again.
_MAX_PATHS = 16


class _JoinedPaths:
    """`base_url` joined with each relative path once, by httpx itself (`build_request`).

    The generated code sends to fixed relative paths (`/track/lead`); httpx parses and joins such a path with
    `base_url` on every request, about half of the SDK's own work per call. An `httpx.URL` is immutable, so
    the joined one serves until `base_url` changes (a new object); sending it skips httpx's parsing.
    """

    __slots__ = ("_urls",)

    def __init__(self) -> None:
        self._urls: dict[str, tuple[httpx.URL, httpx.URL]] = {}

    def url(self, client: httpx.Client | httpx.AsyncClient, url: httpx.URL | str) -> httpx.URL | str:
        if not isinstance(url, str) or not url.startswith("/"):
            return url
        base = client.base_url
        joined = self._urls.get(url)
        if joined is not None and joined[0] is base:
            return joined[1]
        if len(self._urls) >= _MAX_PATHS:
            return url
        self._urls[url] = (base, client.build_request("POST", url).url)
        return self._urls[url][1]


class OwnClient(httpx.Client):
    """The `httpx.Client` a `CMSClient` builds for itself: requests to relative paths reuse the joined URL."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._joined_paths = _JoinedPaths()

    def request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return super().request(method, self._joined_paths.url(self, url), **kwargs)


class OwnAsyncClient(httpx.AsyncClient):
    """The `httpx.AsyncClient` counterpart of `OwnClient`."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._joined_paths = _JoinedPaths()

    async def request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return await super().request(method, self._joined_paths.url(self, url), **kwargs)


class ThroughClient(httpx.BaseTransport):
    """Uses the caller's `httpx.Client` (its transport, proxies, TLS settings, auth, event hooks).

    The SDK's base URL, headers and timeout still apply, and redirects are never followed.
    Closing the SDK's client does not close the caller's.
    """

    def __init__(self, client: httpx.Client) -> None:
        if not isinstance(client, httpx.Client):
            raise TypeError(f"http_client must be an httpx.Client, got {type(client).__name__} (see AsyncCMSClient)")
        self._client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._client.send(request, stream=True, follow_redirects=False)
        return httpx.Response(response.status_code, headers=response.headers, stream=response.stream)


class ThroughAsyncClient(httpx.AsyncBaseTransport):
    """The `httpx.AsyncClient` counterpart of `ThroughClient`."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        if not isinstance(client, httpx.AsyncClient):
            raise TypeError(f"http_client must be an httpx.AsyncClient, got {type(client).__name__} (see CMSClient)")
        self._client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._client.send(request, stream=True, follow_redirects=False)
        return httpx.Response(response.status_code, headers=response.headers, stream=response.stream)
