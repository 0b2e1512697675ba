"""The sandbox over real HTTP: `Sandbox.serve()` and `cms sandbox`.

Built on the standard library's `http.server.ThreadingHTTPServer`, deliberately: the SDK's runtime
dependencies are httpx, attrs and python-dateutil only, and a test double must not add a web framework (or an
ASGI server) to every install. A thread per connection suits what this server is for, a few local clients at
a time, and lets an injected delay simply sleep in its own thread without holding up other requests. It speaks
HTTP/1.1 with keep-alive and JSON only, on loopback by default and without TLS (the SDK allows plain http only
for loopback hosts): it is a development and test tool, not a production server.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .._printable import printable
from ._records import Reply, error_reply
from ._transports import Handle

#: Request bodies larger than this are refused with 413 without being read.
MAX_BODY_BYTES = 1024 * 1024


class SandboxServer(ThreadingHTTPServer):
    """Answers every request with `handle` (a `Sandbox.handle`); `url` is its base URL. An IPv6 `host` (`::1`)
    gets an IPv6 socket.

    `log`, if given, receives one line per request, `POST /track/lead -> 200`, one call at a time, with what
    the client sent escaped (`printable`).
    """

    daemon_threads = True

    def __init__(self, handle: Handle, host: str, port: int, *, log: Callable[[str], None] | None = None) -> None:
        self.handle = handle
        self._log = log
        self._log_lock = threading.Lock()
        ipv6 = ":" in host  # a host name never holds a colon
        self.address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        super().__init__((host, port), _Handler)
        self.url = f"http://{f'[{host}]' if ipv6 else host}:{self.server_address[1]}"

    def log(self, line: str) -> None:
        """Hand `line` to `log`; connections are served in threads, and their lines must not interleave."""
        if self._log is not None:
            with self._log_lock:
                self._log(line)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up (after a timeout, say) is routine; anything else is printed as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SandboxServer
    # TCP_NODELAY: the headers and the body go out in two writes, and Nagle's algorithm would hold the body back
    # until the client's delayed ACK (~40 ms per keep-alive request).
    disable_nagle_algorithm = True
    #: Idle keep-alive connections are closed after this many seconds.
    timeout = 30

    def _answer(self) -> None:
        body = self._read_body()
        reply = (
            body
            if isinstance(body, Reply)
            else self.server.handle(self.command, self.path, dict(self.headers.items()), body)
        )
        if reply.delay:
            time.sleep(reply.delay)  # in this connection's own thread: the sandbox's lock is not held
        outcome = "no answer (dropped)" if reply.dropped else reply.status
        self.server.log(f"{printable(self.command)} {printable(self.path)} -> {outcome}")
        if reply.dropped:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        content = reply.content
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def _read_body(self) -> bytes | Reply:
        """The request's body, or this server's own refusal (not recorded by the sandbox) of a body it will not
        read: chunked, too large, or with a bad Content-Length. A refusal closes the connection."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            refusal = error_reply(411, "Send the body with a Content-Length", "length_required")
        elif length < 0:
            refusal = error_reply(400, "Invalid Content-Length header", "bad_request")
        elif length > MAX_BODY_BYTES:
            refusal = error_reply(413, f"The body is larger than {MAX_BODY_BYTES} bytes", "payload_too_large")
        else:
            return self.rfile.read(length)
        self.close_connection = True
        return refusal

    def __getattr__(self, name: str) -> Callable[[], None]:
        # The base class looks up `do_<METHOD>`: every method (TRACE, PURGE, ...) goes to the sandbox, which
        # answers 405 for anything but POST.
        if name.startswith("do_"):
            return self._answer
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default per-request stderr line; `SandboxServer.log` replaces it."""
