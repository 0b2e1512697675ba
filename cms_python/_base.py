"""What `CMSClient` and `AsyncCMSClient` share: configuration, checks at construction, method signatures."""

from __future__ import annotations

import inspect
import ipaddress
import os
import platform
import re
import ssl
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import cache
from typing import Any, Generic, TypeVar

import httpx
from cms_api_client import Client

from ._attempts import Attempts
from ._http import ACCEPT_ENCODING
from ._operations import TrackRequest
from ._redaction import redact_from_library_logs
from ._types import TrackError
from ._version import __version__

DEFAULT_HOST = "https://api.cme.sh"
TOKEN_VARIABLE = "CMS_BEARER_TOKEN"  # noqa: S105 - a variable name, not a secret
HOST_VARIABLE = "CMS_HOST"
USER_AGENT = f"cms-python-client/{__version__} (Python {platform.python_version()}; httpx {httpx.__version__})"
#: On every request, beside the User-Agent: how CutMeShort's other official SDKs identify themselves.
SDK_HEADERS = {"X-CMS-SDK-Version": f"python-{__version__}", "X-CMS-SDK-Runtime": "python"}
# The settings' patterns stay text, compiled by `re`'s cache on a client's first construction: compiled here, they
# would cost every `import cms_python` ~0.5 ms.
# A header value: visible ASCII, inner spaces, nothing that could end the header line.
_HEADER_VALUE = r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?"
_VISIBLE_ASCII = r"[\x21-\x7e]+"
# scheme://[user info@]host[:port], up to the path, query or fragment; an IPv6 host is bracketed. No backslash:
# URL parsers disagree on it (WHATWG reads it as "/", RFC 3986 parsers as part of the name).
_AUTHORITY = r"[^:/?#]+://(?P<userinfo_and_host>[^/?#\\]*?)(?::(?P<port>[^:/?#\[\]@\\]*))?(?=[/?#]|\Z)"
#: Requests one client has in flight at most; more calls wait for a slot, with no timeout running meanwhile.
#: Also the pool's size, and as many kept alive (with fewer, httpcore closes and reopens connections, TLS
#: handshakes included). Measured with `scripts/bench.py --in-flight`: httpcore's CPU per request grows with
#: connections x idle connections, so 16 or more cost more than 12 even 20 ms from the server, and 8 cannot
#: keep up there (8 / 20 ms = 400 requests/s). The API allows 60 requests a minute: 12 never limits real use.
MAX_IN_FLIGHT = 12

_Method = TypeVar("_Method", bound=Callable[..., Any])
_HttpClient = TypeVar("_HttpClient", httpx.Client, httpx.AsyncClient)

TRACK_LEAD_DOC = """Track a lead event (a signup, a verified email, ...).

    Args:
        event_name: e.g. `"signup_started"`.
        customer_external_id: your stable id for the customer.
        click_id: the click to attribute the lead to. Needed for a standard lead and for the first call of
            deferred attribution (with `mode="deferred"`); leave it out of the later calls for that customer.
        mode: `"deferred"` to store the click-to-customer association for later events.
        customer_name, customer_email, customer_avatar, timestamp, idempotency_key: as for `track_sale`.

    Returns the result dict (`TrackSuccess` or `TrackError`); bad values come back as a `validation_error`
    and send nothing. Never raises, but `TypeError` for unknown or missing keyword names.
    """
TRACK_SALE_DOC = """Track a sale.

    Args:
        event_name: e.g. `"purchase_completed"`.
        customer_external_id: your stable id for the customer.
        invoice_id: your invoice id; the server records one sale per invoice, so retries never count twice.
        amount: in cents, a non-negative int (`4999` is 49.99).
        currency: a 3-letter ISO 4217 code such as `"USD"` (sent upper-case).
        click_id: the click to attribute the sale to; required unless a deferred lead already associates
            this customer with a click.
        customer_name, customer_email, customer_avatar: optional customer details (avatar: an http(s) URL).
        timestamp: when it happened, a timezone-aware datetime; the server uses "now" when absent.
        idempotency_key: sent as `Idempotency-Key` on every attempt; a fresh UUID4 when absent.

    Returns the result dict (`TrackSuccess` or `TrackError`); bad values come back as a `validation_error`
    and send nothing. Never raises, but `TypeError` for unknown or missing keyword names.
    """

_DOCS = {"track_lead": TRACK_LEAD_DOC, "track_sale": TRACK_SALE_DOC}


class ClientBase(ABC, Generic[_HttpClient]):
    """What both faces share; each adds `_connect` (its httpx client) and the I/O of `_send`."""

    def __init__(
        self,
        token: str | None = None,
        host: str | None = None,
        *,
        timeout: float | httpx.Timeout = 10.0,
        max_retries: int = 2,
        http_client: _HttpClient | None = None,
    ) -> None:
        self._token: str = _resolve_token(token)
        redact_from_library_logs(self, self._token)
        self._host: str = _resolve_host(host)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError("max_retries must be an int >= 0 (0 turns retries off)")
        self._max_retries: int = max_retries
        if not isinstance(timeout, httpx.Timeout) and not (
            isinstance(timeout, int | float) and not isinstance(timeout, bool) and 0 < timeout < float("inf")
        ):
            raise ValueError("timeout must be a positive number of seconds or an httpx.Timeout")
        self._timeout: httpx.Timeout = httpx.Timeout(timeout)
        # The token travels only in this header, which httpx masks in its reprs.
        self._settings: dict[str, Any] = {
            "base_url": self._host,
            "headers": {
                "Authorization": f"Bearer {self._token}",
                "User-Agent": USER_AGENT,
                "Accept-Encoding": ACCEPT_ENCODING,
                **SDK_HEADERS,
            },
            "timeout": self._timeout,
            "follow_redirects": False,
            "limits": httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT),
            "verify": _tls_context(),
            # HTTP_PROXY & co. would carry a plain-http (loopback) request, token included, across the network.
            "trust_env": self._host.startswith("https://"),
        }
        self._http_client: _HttpClient | None = http_client
        self._api = self._connect(self._settings, http_client)
        _LIVE_CLIENTS.add(self)

    @property
    def host(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._host

    @property
    def max_retries(self) -> int:
        """How many times a failed attempt is retried when retrying is safe."""
        return self._max_retries

    @property
    def timeout(self) -> httpx.Timeout:
        """The connect, read, write and pool timeouts of one attempt."""
        return self._timeout

    @abstractmethod
    def _connect(self, settings: dict[str, Any], http_client: _HttpClient | None) -> Client:
        """The generated client, sending through a new httpx client built from `settings`; also sets up what
        the face's I/O needs (its `MAX_IN_FLIGHT` slots)."""

    @abstractmethod
    def _is_closed(self) -> bool:
        """Whether `close()` (or `aclose()`) was called."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={self._host!r}, max_retries={self._max_retries})"

    def _attempts(self, request: TrackRequest[Any]) -> Attempts:
        return Attempts(request, max_retries=self._max_retries, token=self._token)

    def _forget_connections(self) -> None:
        """In a forked child: connections of this process's own from now on. The parent's are left alone (closing
        them could send bytes on its sockets); a closed client stays closed."""
        if not self._is_closed():
            self._api = self._connect(self._settings, self._http_client)


#: Every client alive in this process, for `_after_fork_in_child`.
_LIVE_CLIENTS: weakref.WeakSet[ClientBase[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The child inherits the parent's pooled connections: used from both processes, one socket would carry two
    # conversations, and answers would reach the wrong process (gunicorn --preload, multiprocessing, Celery).
    for client in list(_LIVE_CLIENTS):
        client._forget_connections()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def tracking_method(
    qualname: str,
    build: Callable[..., TrackRequest[Any] | TrackError],
    method: _Method,
    *,
    doc: str | None = None,
    returns: str = "TrackResult",
) -> _Method:
    """Make `method` the method `qualname` ("CMSClient.track_lead", "Outbox.track_sale", ...), with the signature
    of `build` (from `_requests`), which it calls, and `doc` (default: the clients' docstring of the name).

    Each keyword argument list is written once, in `_requests`, for every face; `help()` and IDEs show it.
    """
    # The names, docstring and signature only: the annotations, module and globals stay the method's own.
    name = qualname.rpartition(".")[2]
    method.__name__ = name
    method.__qualname__ = qualname
    method.__doc__ = _DOCS[name] if doc is None else doc
    signature = inspect.signature(build)
    self = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self, *signature.parameters.values()], return_annotation=returns
    )
    return method


@cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default (verifying) TLS context, built once: each costs ~40 ms, and they are safe to share."""
    return httpx.create_ssl_context()


def _resolve_token(token: str | None) -> str:
    if token is None:
        token = os.environ.get(TOKEN_VARIABLE) or None
    if token is None:
        raise ValueError(f"No API token: pass CMSClient(token=...) or set the {TOKEN_VARIABLE} environment variable")
    # The messages below never include the token itself.
    if not isinstance(token, str) or not token.strip():
        raise ValueError("The API token must be a non-empty str")
    if not re.fullmatch(_HEADER_VALUE, token):
        raise ValueError(
            "The API token has surrounding whitespace, a line break or another character not allowed in an HTTP header"
        )
    return token


def _resolve_host(host: str | None) -> str:
    host = host or os.environ.get(HOST_VARIABLE) or DEFAULT_HOST
    # A host with user info may hold a password: such a host is never repeated in a message.
    shown = repr(host) if isinstance(host, str) and "@" not in host else "a URL with '@' (not shown)"
    try:
        url = httpx.URL(host)
        # What the socket layer will do with the name: it refuses empty and over-long labels.
        url.host.encode("idna")
    except (TypeError, httpx.InvalidURL, UnicodeError):
        url = None
    authority = re.match(_AUTHORITY, host) if url is not None and re.fullmatch(_VISIBLE_ASCII, host) else None
    if url is None or authority is None or url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"host must be an http(s) URL such as 'https://api.cme.sh', got {shown}")
    if "@" in authority["userinfo_and_host"]:
        raise ValueError("host must not contain user info (user:password@): the API authenticates with the token alone")
    if "?" in host or "#" in host:
        raise ValueError(f"host must not have a query or a fragment ('?', '#'), got {shown}")
    port = authority["port"]
    if port and not (port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        raise ValueError(f"host's port must be a number from 1 to 65535, got {shown}")
    if url.scheme == "http" and not _is_loopback(url.host):
        raise ValueError(
            f"host {shown} uses plain http: the token would cross the network unencrypted. "
            "Use https (plain http is allowed only for localhost / 127.0.0.0/8 / ::1)."
        )
    # The scheme in lower case, once: every later check of it (proxies) reads this string.
    return url.scheme + host[len(url.scheme) :].rstrip("/")


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
