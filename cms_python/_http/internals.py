"""Every use of an httpx or httpcore private name in the SDK, each behind a small function.

httpx offers no public way to do these, and a new httpx or httpcore may rename what they touch:
tests/test_http_internals.py names each attribute that the installed versions no longer have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

import httpx


@overload
def own_transport(client: httpx.Client) -> httpx.BaseTransport: ...
@overload
def own_transport(client: httpx.AsyncClient) -> httpx.AsyncBaseTransport: ...
def own_transport(client: httpx.Client | httpx.AsyncClient) -> httpx.BaseTransport | httpx.AsyncBaseTransport:
    """The transport the client was built with (its connection pool, TLS settings), none of its mounts or
    proxies."""
    return client._transport


@overload
def transport_for_url(client: httpx.Client, url: httpx.URL) -> httpx.BaseTransport: ...
@overload
def transport_for_url(client: httpx.AsyncClient, url: httpx.URL) -> httpx.AsyncBaseTransport: ...
def transport_for_url(
    client: httpx.Client | httpx.AsyncClient, url: httpx.URL
) -> httpx.BaseTransport | httpx.AsyncBaseTransport:
    """The transport the client would send a request for `url` through: a mount, a proxy, or its own."""
    return client._transport_for_url(url)


def wrap_network_backends(client: httpx.Client | httpx.AsyncClient, wrap: Callable[[Any], object]) -> None:
    """Give each httpcore connection pool of the client (its own transport's and its proxies') the network
    backend `wrap` makes of the one it has. Transports that have no httpcore pool are left as they are."""
    for transport in (client._transport, *client._mounts.values()):
        pool = getattr(transport, "_pool", None)
        if pool is not None and hasattr(pool, "_network_backend"):
            pool._network_backend = wrap(pool._network_backend)


def store_content(response: httpx.Response, body: bytes) -> None:
    """Make `body` the response's content, as `response.read()` would once its raw stream is consumed."""
    response._content = body
