"""Sending the SDK's requests through a caller's httpx client, without changing it."""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar, overload

import httpx

from .internals import own_transport, transport_for_url

_HttpClient = TypeVar("_HttpClient", httpx.Client, httpx.AsyncClient)


class _Through(Generic[_HttpClient]):
    """What `ThroughClient` and `ThroughAsyncClient` share: everything but running hooks and sending."""

    #: The httpx client class this transport sends through, and the face that takes the other one.
    _takes: ClassVar[type[httpx.Client | httpx.AsyncClient]]
    _other_face: ClassVar[str]

    def __init__(self, client: _HttpClient) -> None:
        if not isinstance(client, self._takes):
            raise TypeError(
                f"http_client must be an httpx.{self._takes.__name__}, got {type(client).__name__} "
                f"(see {self._other_face})"
            )
        self._client: _HttpClient = client

    def _check_open(self) -> None:
        if self._client.is_closed:
            raise RuntimeError("Cannot send a request, as the http_client has been closed.")


@overload
def _transport_for(client: httpx.Client, url: httpx.URL) -> httpx.BaseTransport: ...
@overload
def _transport_for(client: httpx.AsyncClient, url: httpx.URL) -> httpx.AsyncBaseTransport: ...
def _transport_for(
    client: httpx.Client | httpx.AsyncClient, url: httpx.URL
) -> httpx.BaseTransport | httpx.AsyncBaseTransport:
    """The client's transport for `url`: for plain http (loopback) its own, never a proxy, so the token never
    crosses a network in clear; otherwise the one the client would choose (a mount, a proxy, its own)."""
    return own_transport(client) if url.scheme == "http" else transport_for_url(client, url)


def _fresh(response: httpx.Response) -> httpx.Response:
    """A fresh response over the same stream: a test transport may hand back one it has read already."""
    return httpx.Response(
        response.status_code, headers=response.headers, stream=response.stream, extensions=response.extensions
    )


class ThroughClient(_Through[httpx.Client], httpx.BaseTransport):
    """Sends through the caller's `httpx.Client`: the transport it would use for the URL (its connection pool,
    proxies, mounts, TLS settings) and its event hooks. Its auth and cookies stay out (the SDK authenticates by
    its token and keeps no cookies), and so do its base URL, headers, timeout and redirect settings.

    A plain-http (loopback) request goes to the client's own transport, never through a proxy, so the token
    never crosses a network in clear. Closing the SDK's client does not close the caller's.
    """

    _takes = httpx.Client
    _other_face = "AsyncCMSClient"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._check_open()
        for hook in self._client.event_hooks["request"]:
            hook(request)
        return _fresh(_transport_for(self._client, request.url).handle_request(request))

    def inspect(self, response: httpx.Response) -> None:
        """Run the caller's response hooks on the answer, once its body is read."""
        for hook in self._client.event_hooks["response"]:
            try:
                hook(response)
            except httpx.HTTPStatusError:  # e.g. a `raise_for_status` hook: the SDK judges the status itself
                return


class ThroughAsyncClient(_Through[httpx.AsyncClient], httpx.AsyncBaseTransport):
    """The `httpx.AsyncClient` counterpart of `ThroughClient`."""

    _takes = httpx.AsyncClient
    _other_face = "CMSClient"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._check_open()
        for hook in self._client.event_hooks["request"]:
            await hook(request)
        return _fresh(await _transport_for(self._client, request.url).handle_async_request(request))

    async def inspect(self, response: httpx.Response) -> None:
        """Run the caller's response hooks on the answer, once its body is read."""
        for hook in self._client.event_hooks["response"]:
            try:
                await hook(response)
            except httpx.HTTPStatusError:
                return
