"""The HTTP wing: the SDK's own httpx clients, and sending its requests through a caller's httpx client without
changing it.

What a server can do to one attempt is bounded here, whoever built the httpx client:

- the body is read whole, before anything parses it, and at most `MAX_BODY` bytes of it, as received and as
  decoded (gzip and deflate are decoded one bounded step at a time, so a compression bomb stops at the cap);
- the attempt ends at its deadline (the sum of the connect, write, read and pool timeouts), however slowly the
  server trickles its answer: the SDK's own connection pools bound every connect, read and write by it, and the
  body's reading checks it between chunks (the only bound through a caller's client);
- no cookies are kept (the API authenticates by token), and redirects are never followed.

`clients` (the SDK's own httpx clients), `passthrough` (a caller's client), `deadline`, `body`; `internals` holds
every use of an httpx or httpcore private name.
"""

from .body import ACCEPT_ENCODING, MAX_BODY, UnreadableBody
from .clients import OwnAsyncClient, OwnClient
from .deadline import attempt_budget
from .passthrough import ThroughAsyncClient, ThroughClient

__all__ = [
    "ACCEPT_ENCODING",
    "MAX_BODY",
    "OwnAsyncClient",
    "OwnClient",
    "ThroughAsyncClient",
    "ThroughClient",
    "UnreadableBody",
    "attempt_budget",
]
