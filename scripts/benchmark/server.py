"""The canned server (run as `bench.py --serve`): HTTP/1.1 on 127.0.0.1, keep-alive and pipelining; prints its port,
answers until its stdin closes. Paths under `/published` get the 1.0.0 client's 200 shape, all others the SDK's;
paths under LATENCY_PREFIX the same replies API_LATENCY_MS late."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .common import API_LATENCY_MS, ENTRY, LATENCY_PREFIX, PUBLISHED_REPLY, SDK_REPLY


def _http_reply(body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    return head.encode() + payload


class _CannedProtocol(asyncio.Protocol):
    """Parses HTTP/1.1 requests off a keep-alive connection (pipelining too) and answers each at once, or, for
    paths under LATENCY_PREFIX, API_LATENCY_MS later (a timer; the server keeps serving meanwhile).

    A connection is expected to use one or the other: delayed replies keep their order among themselves only.
    """

    sdk_reply = _http_reply(SDK_REPLY)
    published_reply = _http_reply(PUBLISHED_REPLY)
    latency_prefix = LATENCY_PREFIX.encode()

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        # Delayed replies, oldest first: each timer sends the oldest, so pipelined replies keep their order.
        self._delayed: collections.deque[tuple[bytes, bool]] = collections.deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:end].lower()
            length = 0
            if (start := head.find(b"\r\ncontent-length:")) >= 0:
                stop = head.find(b"\r\n", start + 2)
                length = int(head[start + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            path = head.split(b" ", 2)[1]
            self._buffer = self._buffer[total:]
            close = b"\r\nconnection: close" in head
            delayed = path.startswith(self.latency_prefix)
            if delayed:
                path = path[len(self.latency_prefix) :]
            reply = self.published_reply if path.startswith(b"/published") else self.sdk_reply
            if delayed:
                self._delayed.append((reply, close))
                asyncio.get_running_loop().call_later(API_LATENCY_MS / 1000, self._send_delayed)
            else:
                self._transport.write(reply)
                if close:
                    self._transport.close()
            if close:
                return

    def _send_delayed(self) -> None:
        assert self._transport is not None
        reply, close = self._delayed.popleft()
        if self._transport.is_closing():  # the client went away meanwhile
            return
        self._transport.write(reply)
        if close:
            self._transport.close()


def serve() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_CannedProtocol, "127.0.0.1", 0, backlog=256)
        print(server.sockets[0].getsockname()[1], flush=True)
        stdin_closed = loop.create_future()

        def wait_for_eof() -> None:
            sys.stdin.read()
            loop.call_soon_threadsafe(stdin_closed.set_result, None)

        threading.Thread(target=wait_for_eof, daemon=True).start()
        await stdin_closed
        server.close()

    asyncio.run(main())


@contextmanager
def canned_server() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, ENTRY, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the canned server did not start (exit status {process.poll()})")
        port = int(line)
        yield f"http://127.0.0.1:{port}"
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
