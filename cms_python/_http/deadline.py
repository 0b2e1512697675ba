"""The attempt's deadline: the sum of its connect, write, read and pool timeouts, however slowly a server
trickles its answer. Network backends for httpcore's connection pools that end every connect, read and write
by it, a sync and an async one."""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Literal

import httpx

if TYPE_CHECKING:  # httpx imports httpcore only when it makes a transport: at the top it costs ~35 ms of import
    import httpcore

#: When the current attempt must end (`time.monotonic()`), for the connections of the SDK's own pools.
_DEADLINE: ContextVar[float | None] = ContextVar("cms_python_deadline", default=None)


def attempt_budget(timeout: httpx.Timeout) -> float | None:
    """How long an attempt may take: its phases' timeouts added up; None (no deadline) when one is unbounded."""
    phases = (timeout.connect, timeout.write, timeout.read, timeout.pool)
    return None if None in phases else sum(phase for phase in phases if phase is not None)


def start_attempt(budget: float | None) -> Token[float | None]:
    """Start the clock of an attempt that may take `budget` seconds (None: no deadline), in this context;
    `end_attempt` takes what it returns."""
    return _DEADLINE.set(None if budget is None else time.monotonic() + budget)


def end_attempt(started: Token[float | None]) -> None:
    _DEADLINE.reset(started)


def current_deadline() -> float | None:
    """When the current attempt must end (`time.monotonic()`); None outside an attempt, or with no deadline."""
    return _DEADLINE.get()


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


class _Bounding:
    """What the streams and backends below share: the httpcore stream or backend whose waits they bound (each
    names its type; not a generic class, whose subscripted bases would cost import time for no check at run time)."""

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped


class _BoundingStream(_Bounding):
    """What the two streams share: everything but their I/O."""

    def get_extra_info(self, info: str) -> Any:
        return self._wrapped.get_extra_info(info)


class DeadlineStream(_BoundingStream):
    """An httpcore `NetworkStream` whose every wait ends by the attempt's deadline."""

    _wrapped: httpcore.NetworkStream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._wrapped.read(max_bytes, _bounded(timeout, "Read"))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._wrapped.write(buffer, _bounded(timeout, "Write"))

    def close(self) -> None:
        self._wrapped.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> DeadlineStream:
        bounded = _bounded(timeout, "Connect")
        return DeadlineStream(self._wrapped.start_tls(ssl_context, server_hostname, bounded))


class AsyncDeadlineStream(_BoundingStream):
    """The async counterpart of `DeadlineStream`."""

    _wrapped: httpcore.AsyncNetworkStream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._wrapped.read(max_bytes, _bounded(timeout, "Read"))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._wrapped.write(buffer, _bounded(timeout, "Write"))

    async def aclose(self) -> None:
        await self._wrapped.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> AsyncDeadlineStream:
        bounded = _bounded(timeout, "Connect")
        return AsyncDeadlineStream(await self._wrapped.start_tls(ssl_context, server_hostname, bounded))


class DeadlineBackend(_Bounding):
    """An httpcore `NetworkBackend` whose connections are `DeadlineStream`s."""

    _wrapped: httpcore.NetworkBackend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> DeadlineStream:
        bounded = _bounded(timeout, "Connect")
        return DeadlineStream(self._wrapped.connect_tcp(host, port, bounded, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> DeadlineStream:
        bounded = _bounded(timeout, "Connect")
        return DeadlineStream(self._wrapped.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._wrapped.sleep(seconds)


class AsyncDeadlineBackend(_Bounding):
    """The async counterpart of `DeadlineBackend`."""

    _wrapped: httpcore.AsyncNetworkBackend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> AsyncDeadlineStream:
        bounded = _bounded(timeout, "Connect")
        return AsyncDeadlineStream(await self._wrapped.connect_tcp(host, port, bounded, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> AsyncDeadlineStream:
        bounded = _bounded(timeout, "Connect")
        return AsyncDeadlineStream(await self._wrapped.connect_unix_socket(path, bounded, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._wrapped.sleep(seconds)
