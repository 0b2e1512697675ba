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
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ._sandbox import Reply, error_reply

#: Request bodies larger than this are refused with 413 without being read.
MAX_BODY_BYTES = 1024 * 1024

Handle = Callable[[str, str, Mapping[str, str], bytes], Reply]


class SandboxServer(ThreadingHTTPServer):
    """Answers every request with `handle` (a `Sandbox.handle`); `url` is its base URL.

    `log`, if given, receives one line per request: `POST /track/lead -> 200`.
    """

    daemon_threads = True

    def __init__(self, handle: Handle, host: str, port: int, *, log: Callable[[str], None] | None = None) -> None:
        self.handle = handle
        self.log = log
        super().__init__((host, port), _Handler)
        self.url = f"http://{host}:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up (after a timeout, say) is routine; anything else is printed as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SandboxServer
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
        if self.server.log is not None:
            self.server.log(f"{self.command} {self.path} -> {'no answer (dropped)' if reply.dropped else reply.status}")
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
