"""A real HTTP/1.1 server on 127.0.0.1 for tests, answering each request from a script of replies."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SUCCESS = {"success": True, "message": "Event tracked successfully", "data": {"id": "evt_1"}}


@dataclass
class Reply:
    """What the server does with one request.

    `body`: bytes are sent as they are; anything else as JSON. `action`: None answers normally;
    "drop" closes the connection without answering; "truncate" promises more bytes than it sends, then closes.
    """

    status: int = 200
    body: Any = field(default_factory=lambda: dict(SUCCESS))
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    action: str | None = None

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.headers.get("Content-Type", "text/html")
        return json.dumps(self.body).encode(), "application/json"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    #: The client's port: requests with the same one came over the same connection.
    port: int = 0

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 makes a burst of connections wait ~1 s for SYN retransmits.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, cancellation) leaves a delayed reply writing into a closed socket.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackServer:
    """Threaded server; `queue(...)` scripts the next replies, `default` answers once the script runs out."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.default = Reply()
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, Nagle's algorithm and delayed ACKs
            # hold the second one back ~40 ms on a reused connection.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with server._lock:
                    server.requests.append(
                        Recorded(
                            self.command,
                            self.path,
                            dict(self.headers.items()),
                            body,
                            time.monotonic(),
                            self.client_address[1],
                        )
                    )
                    reply = server._script.popleft() if server._script else server.default
                server._answer(self, reply)

            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def _answer(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.delay:
            time.sleep(reply.delay)
        if reply.action == "drop":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        payload, content_type = reply.encoded()
        handler.send_response(reply.status)
        headers = {"Content-Type": content_type, "Content-Length": str(len(payload)), **reply.headers}
        if reply.action == "truncate":
            headers["Content-Length"] = str(len(payload) + 100)
            handler.close_connection = True
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def read_request(connection: socket.socket) -> bytes:
    """One HTTP/1.1 request off `connection` (head and Content-Length body); b"" when the client closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return data


class RawServer:
    """A TCP server on 127.0.0.1 for answers no HTTP server library would write (a malformed status line, any
    reason phrase, trickled, endless). `answer`: raw bytes, sent after each request (recorded in `requests`)
    before the connection closes; or a function given each connection, in a thread of its own.

    `connections` counts the connections accepted, `sent` the bytes `send` got out; `closed` is set on close().
    """

    def __init__(self, answer: bytes | Callable[[RawServer, socket.socket], None]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.sent = 0
        self.closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def send(self, connection: socket.socket, data: bytes) -> None:
        connection.sendall(data)
        self.sent += len(data)

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        # OSError: the client hung up, which is what the tests with an answering function want of it.
        with connection, contextlib.suppress(OSError):
            if callable(self.answer):
                self.answer(self, connection)
            else:
                self.requests.append(read_request(connection))
                self.send(connection, self.answer)

    def close(self) -> None:
        self.closed.set()
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)


def has_ipv6_loopback() -> bool:
    """Whether this machine can serve on ::1 (containers may have IPv6 switched off)."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
