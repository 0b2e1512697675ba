"""The SDK's own httpx clients, and sending its requests through a caller's httpx client without changing it.

What a server can do to one attempt is bounded here, whoever built the httpx client:

- the body is read whole, before anything parses it, and at most `MAX_BODY` bytes of it, as received and as
  decoded (gzip and deflate are decoded one bounded step at a time, so a compression bomb stops at the cap);
- the attempt ends at its deadline (the sum of the connect, write, read and pool timeouts), however slowly the
  server trickles its answer: the SDK's own connection pools bound every connect, read and write by it, and the
  body's reading checks it between chunks (the only bound through a caller's client);
- no cookies are kept (the API authenticates by token), and redirects are never followed.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import AsyncGenerator, Callable, Generator
from contextvars import ContextVar
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import httpx

if TYPE_CHECKING:  # httpx imports httpcore only when it makes a transport: at the top it costs ~35 ms of import
    import httpcore

#: The most body the SDK reads, received or decoded: the API's answers are a few hundred bytes.
MAX_BODY = 1024 * 1024
#: What `_Decoder` decodes; httpx alone would also offer br and zstd when their packages are installed.
ACCEPT_ENCODING = "gzip, deflate"
#: More distinct relative paths than the API has: past this, paths are joined with `base_url` per request again.
_MAX_PATHS = 16
#: When the current attempt must end (`time.monotonic()`), for the connections of the SDK's own pools.
_DEADLINE: ContextVar[float | None] = ContextVar("cms_python_deadline", default=None)


class UnreadableBody(httpx.HTTPError):
    """The status line and headers arrived, but not a usable body. `response` has the status and headers.

    `incomplete`: the body did not arrive whole (cut short, broken framing, too slow); otherwise it arrived, or
    was arriving, but cannot be used (larger than `MAX_BODY`, or its content encoding is broken).
    """

    def __init__(self, problem: str, response: httpx.Response, *, incomplete: bool) -> None:
        super().__init__(problem)
        self.problem = problem
        self.response = response
        self.incomplete = incomplete


class _NotFollowed(Exception):
    """Ends httpx's handling of a redirect once its body is read: httpx would prepare the next request, parsing
    `Location` (a bad one raises), although the SDK never follows it."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response


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
    """The `httpx.Client` a `CMSClient` builds for itself (`transport`: a `ThroughClient`, or None for its own
    connection pool). Requests to relative paths reuse the joined URL; every answer is read as the module says."""

    def __init__(self, **settings: Any) -> None:
        transport = settings.get("transport")
        self._through = transport if isinstance(transport, ThroughClient) else None
        _construct(super().__init__, settings, self._read)
        self._joined_paths = _JoinedPaths()
        self._budget = attempt_budget(self.timeout)
        if transport is None:
            _bound_by_deadline(self, _DeadlineBackend)

    def request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return super().request(method, self._joined_paths.url(self, url), **kwargs)

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        deadline = _DEADLINE.set(None if self._budget is None else time.monotonic() + self._budget)
        try:
            return super().send(request, **kwargs)
        except _NotFollowed as redirect:
            return redirect.response
        finally:
            _DEADLINE.reset(deadline)

    def _read(self, response: httpx.Response) -> None:
        decoder = _Decoder(response)
        # Closed here, not whenever the garbage collector gets to it, when the reading stops early.
        chunks = cast(Generator[bytes, None, None], response.iter_raw())
        try:
            for chunk in chunks:
                decoder.feed(chunk)
            decoder.finish()
        except (httpx.HTTPError, MemoryError) as exc:
            raise decoder.failure(exc) from exc
        finally:
            chunks.close()
        if self._through is not None:
            self._through.inspect(response)
        if response.has_redirect_location:
            raise _NotFollowed(response)


class OwnAsyncClient(httpx.AsyncClient):
    """The `httpx.AsyncClient` counterpart of `OwnClient`."""

    def __init__(self, **settings: Any) -> None:
        transport = settings.get("transport")
        self._through = transport if isinstance(transport, ThroughAsyncClient) else None
        _construct(super().__init__, settings, self._read)
        self._joined_paths = _JoinedPaths()
        self._budget = attempt_budget(self.timeout)
        if transport is None:
            _bound_by_deadline(self, _AsyncDeadlineBackend)

    async def request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return await super().request(method, self._joined_paths.url(self, url), **kwargs)

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        deadline = _DEADLINE.set(None if self._budget is None else time.monotonic() + self._budget)
        try:
            return await super().send(request, **kwargs)
        except _NotFollowed as redirect:
            return redirect.response
        finally:
            _DEADLINE.reset(deadline)

    async def _read(self, response: httpx.Response) -> None:
        decoder = _Decoder(response)
        # Closed here: left to the event loop, an unfinished one outlives a loop closed meanwhile.
        chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw())
        try:
            async for chunk in chunks:
                decoder.feed(chunk)
            decoder.finish()
        except (httpx.HTTPError, MemoryError) as exc:
            raise decoder.failure(exc) from exc
        finally:
            await chunks.aclose()
        if self._through is not None:
            await self._through.inspect(response)
        if response.has_redirect_location:
            raise _NotFollowed(response)


class ThroughClient(httpx.BaseTransport):
    """Sends through the caller's `httpx.Client`: the transport it would use for the URL (its connection pool,
    proxies, mounts, TLS settings) and its event hooks. Its auth and cookies stay out (the SDK authenticates by
    its token and keeps no cookies), and so do its base URL, headers, timeout and redirect settings.

    A plain-http (loopback) request goes to the client's own transport, never through a proxy, so the token
    never crosses a network in clear. Closing the SDK's client does not close the caller's.
    """

    def __init__(self, client: httpx.Client) -> None:
        if not isinstance(client, httpx.Client):
            raise TypeError(f"http_client must be an httpx.Client, got {type(client).__name__} (see AsyncCMSClient)")
        self._client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._client.is_closed:
            raise RuntimeError("Cannot send a request, as the http_client has been closed.")
        for hook in self._client.event_hooks["request"]:
            hook(request)
        # httpx offers no public way to ask a client which transport (pool, proxy, mount) serves a URL.
        if request.url.scheme == "http":
            transport = self._client._transport
        else:
            transport = self._client._transport_for_url(request.url)
        response = transport.handle_request(request)
        # A fresh response over the same stream: a test transport may hand back one it has read already.
        return httpx.Response(
            response.status_code, headers=response.headers, stream=response.stream, extensions=response.extensions
        )

    def inspect(self, response: httpx.Response) -> None:
        """Run the caller's response hooks on the answer, once its body is read."""
        for hook in self._client.event_hooks["response"]:
            try:
                hook(response)
            except httpx.HTTPStatusError:  # e.g. a `raise_for_status` hook: the SDK judges the status itself
                return


class ThroughAsyncClient(httpx.AsyncBaseTransport):
    """The `httpx.AsyncClient` counterpart of `ThroughClient`."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        if not isinstance(client, httpx.AsyncClient):
            raise TypeError(f"http_client must be an httpx.AsyncClient, got {type(client).__name__} (see CMSClient)")
        self._client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._client.is_closed:
            raise RuntimeError("Cannot send a request, as the http_client has been closed.")
        for hook in self._client.event_hooks["request"]:
            await hook(request)
        if request.url.scheme == "http":
            transport = self._client._transport
        else:
            transport = self._client._transport_for_url(request.url)
        response = await transport.handle_async_request(request)
        return httpx.Response(
            response.status_code, headers=response.headers, stream=response.stream, extensions=response.extensions
        )

    async def inspect(self, response: httpx.Response) -> None:
        """Run the caller's response hooks on the answer, once its body is read."""
        for hook in self._client.event_hooks["response"]:
            try:
                await hook(response)
            except httpx.HTTPStatusError:
                return


def _construct(init: Callable[..., None], settings: dict[str, Any], read: Callable[[httpx.Response], Any]) -> None:
    """httpx's constructor with the SDK's fixed settings; an unusable proxy from the environment is a ValueError."""
    try:
        init(
            **settings,
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),  # takes no cookie from anyone
            event_hooks={"response": [read]},
        )
    except (ImportError, ValueError, httpx.InvalidURL) as exc:
        if not settings.get("trust_env", True):
            raise
        # The proxy URL may hold a password: the message names the variables, not their values.
        reason = str(exc) if isinstance(exc, ImportError) else "it is not a valid proxy URL"
        raise ValueError(
            f"The proxy set in the environment (HTTPS_PROXY, ALL_PROXY or another *_PROXY variable) cannot be "
            f"used: {reason}"
        ) from None


def attempt_budget(timeout: httpx.Timeout) -> float | None:
    """How long an attempt may take: its phases' timeouts added up; None (no deadline) when one is unbounded."""
    phases = (timeout.connect, timeout.write, timeout.read, timeout.pool)
    return None if None in phases else sum(phase for phase in phases if phase is not None)


def _bound_by_deadline(client: httpx.Client | httpx.AsyncClient, backend: Callable[[Any], object]) -> None:
    """Make the client's connection pools (its own and its proxies') end every connect, read and write at the
    attempt's deadline. httpx offers no public way to give its pools a network backend."""
    for transport in (client._transport, *client._mounts.values()):
        pool = getattr(transport, "_pool", None)
        if pool is not None and hasattr(pool, "_network_backend"):
            pool._network_backend = backend(pool._network_backend)


def _bounded(timeout: float | None, phase: Literal["Connect", "Read", "Write"]) -> float | None:
    """`timeout`, shortened to what is left of the attempt; httpcore's timeout for `phase` once nothing is."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        import httpcore  # noqa: PLC0415 - loaded since httpx made the transport calling this

        expired = {"Connect": httpcore.ConnectTimeout, "Read": httpcore.ReadTimeout, "Write": httpcore.WriteTimeout}
        raise expired[phase]("the attempt's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream:
    """An httpcore `NetworkStream` whose every wait ends by the attempt's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, "Read"))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, "Write"))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _DeadlineStream:
        bounded = _bounded(timeout, "Connect")
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend:
    """An httpcore `NetworkBackend` whose connections are `_DeadlineStream`s."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> _DeadlineStream:
        bounded = _bounded(timeout, "Connect")
        return _DeadlineStream(self._backend.connect_tcp(host, port, bounded, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> _DeadlineStream:
        bounded = _bounded(timeout, "Connect")
        return _DeadlineStream(self._backend.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _AsyncDeadlineStream:
    """The async counterpart of `_DeadlineStream`."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, _bounded(timeout, "Read"))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, _bounded(timeout, "Write"))

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _AsyncDeadlineStream:
        bounded = _bounded(timeout, "Connect")
        return _AsyncDeadlineStream(await self._stream.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _AsyncDeadlineBackend:
    """The async counterpart of `_DeadlineBackend`."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> _AsyncDeadlineStream:
        bounded = _bounded(timeout, "Connect")
        return _AsyncDeadlineStream(await self._backend.connect_tcp(host, port, bounded, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> _AsyncDeadlineStream:
        bounded = _bounded(timeout, "Connect")
        return _AsyncDeadlineStream(await self._backend.connect_unix_socket(path, bounded, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _Decoder:
    """Collects one response's body from its raw chunks: at most `MAX_BODY` bytes received, and at most that
    many out of each decoding step (gzip, deflate: the `Content-Encoding`s asked for; others pass as they are,
    as in httpx). A step never makes more than the cap allows, so a compression bomb costs ~1 MiB, not gigabytes.
    """

    __slots__ = ("_body", "_deadline", "_received", "_response", "_sizes", "_steps")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._deadline = _DEADLINE.get()
        self._received = 0
        # One buffer, not a list of chunks: a body sent a byte per chunk costs its size, not 8 bytes a byte.
        self._body = bytearray()
        # Applied in the order listed: undone in reverse.
        encodings = [
            name
            for name in map(str.lower, reversed(response.headers.get_list("content-encoding", split_commas=True)))
            if name in _WBITS
        ]
        if len(encodings) > _MAX_STEPS:  # each costs memory, and time per chunk: thousands would be an attack
            raise UnreadableBody("it has too many content encodings", response, incomplete=False)
        self._steps: list[_Step] = [
            _Deflate() if name == "deflate" else zlib.decompressobj(_WBITS[name]) for name in encodings
        ]
        self._sizes = [0] * len(self._steps)

    def feed(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received > MAX_BODY:
            raise self._too_large()
        self._body += self._decode(chunk, final=False)
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise UnreadableBody("it was still arriving at the attempt's deadline", self._response, incomplete=True)

    def finish(self) -> None:
        """Store the decoded body as the response's content."""
        if self._received:
            self._body += self._decode(b"", final=True)
        # What `response.read()` would store; the raw stream is consumed.
        self._response._content = bytes(self._body)

    def failure(self, exc: httpx.HTTPError | MemoryError) -> UnreadableBody:
        """What a failure while receiving the body (cut short, broken chunking, a timeout) means for the call."""
        if isinstance(exc, UnreadableBody):
            return exc
        if isinstance(exc, MemoryError):
            return UnreadableBody("the process ran out of memory while reading it", self._response, incomplete=True)
        return UnreadableBody(f"{type(exc).__name__}: {exc}", self._response, incomplete=True)

    def _decode(self, data: bytes, *, final: bool) -> bytes:
        for index, step in enumerate(self._steps):
            room = MAX_BODY - self._sizes[index]
            try:
                # One byte more than there is room for says "too large" without making the rest.
                data = step.decompress(data, room + 1)
                if final and not step.eof:
                    raise zlib.error("the compressed stream ends early")
            except zlib.error as exc:
                problem = f"its content encoding is broken ({exc})"
                raise UnreadableBody(problem, self._response, incomplete=False) from exc
            self._sizes[index] += len(data)
            if len(data) > room:
                raise self._too_large()
        return data

    def _too_large(self) -> UnreadableBody:
        return UnreadableBody(f"it is larger than {MAX_BODY:,} bytes", self._response, incomplete=False)


# zlib's window bits for each encoding: gzip's header and trailer, or the zlib wrapper ("deflate").
_WBITS = {"gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}
#: Content encodings decoded one after another: servers use one; two is already odd.
_MAX_STEPS = 2


class _Step(Protocol):
    """One decoding step: zlib's decompressor, or `_Deflate`."""

    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int, /) -> bytes: ...


class _Deflate:
    """ "deflate" as sent: zlib-wrapped as the standard says, or raw as some servers send it (httpx takes both)."""

    __slots__ = ("_first", "_step")

    def __init__(self) -> None:
        self._step = zlib.decompressobj(zlib.MAX_WBITS)
        self._first = True

    @property
    def eof(self) -> bool:
        return self._step.eof

    def decompress(self, data: bytes, max_length: int) -> bytes:
        first, self._first = self._first, False
        try:
            return self._step.decompress(data, max_length)
        except zlib.error:
            if not first:
                raise
            self._step = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._step.decompress(data, max_length)
