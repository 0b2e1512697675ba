"""httpx transports answered in-process: `Sandbox.transport()` and `Sandbox.async_transport()`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import httpx

from ._records import Reply

#: Answers one request: method, target (path and query), headers, body.
Handle = Callable[[str, str, Mapping[str, str], bytes], Reply]


class SandboxTransport(httpx.BaseTransport):
    """For `httpx.Client`: each request is answered by `handle`, as a network would deliver the answer."""

    def __init__(self, handle: Handle) -> None:
        self._handle = handle

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        reply = self._handle(request.method, request.url.raw_path.decode(), request.headers, request.read())
        wait, timed_out = _wait(reply, request)
        if wait:
            time.sleep(wait)
        return _response(reply, request, timed_out)


class AsyncSandboxTransport(httpx.AsyncBaseTransport):
    """For `httpx.AsyncClient`: as `SandboxTransport`, waiting without blocking the event loop."""

    def __init__(self, handle: Handle) -> None:
        self._handle = handle

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        reply = self._handle(request.method, request.url.raw_path.decode(), request.headers, body)
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
