"""Reading a response's body whole, before anything parses it, and at most `MAX_BODY` bytes of it, as received
and as decoded: gzip and deflate are decoded one bounded step at a time, so a compression bomb stops at the cap."""

from __future__ import annotations

import time
import zlib
from typing import Protocol

import httpx

from .deadline import current_deadline
from .internals import store_content

#: The most body the SDK reads, received or decoded: the API's answers are a few hundred bytes.
MAX_BODY = 1024 * 1024
#: What `Decoder` decodes; httpx alone would also offer br and zstd when their packages are installed.
ACCEPT_ENCODING = "gzip, deflate"


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


class Decoder:
    """Collects one response's body from its raw chunks: at most `MAX_BODY` bytes received, and at most that
    many out of each decoding step (gzip, deflate: the `Content-Encoding`s asked for; others pass as they are,
    as in httpx). A step never makes more than the cap allows, so a compression bomb costs ~1 MiB, not gigabytes.
    """

    __slots__ = ("_body", "_deadline", "_received", "_response", "_sizes", "_steps")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._deadline = current_deadline()
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
        store_content(self._response, bytes(self._body))

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
