"""When to try a call again, and how long to wait first. Pure functions: no I/O, no sleeping."""

from __future__ import annotations

import math
import random
import re
import ssl
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import httpx

#: Statuses that say "not now" rather than "not this": the same request may succeed later.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
INITIAL_DELAY = 0.5
MAX_DELAY = 8.0
#: The longest `Retry-After` the SDK waits for; a longer one ends the call with the error dict instead.
MAX_RETRY_AFTER = 60.0
# RFC 9110's delay-seconds is 1*DIGIT; a fraction and a sign are tolerated, surrounding spaces too. Compiled by
# `re`'s cache at the first Retry-After, not by `import cms_python`.
_SECONDS = r"[ \t]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[ \t]*"


def is_retryable_exception(exc: httpx.HTTPError) -> bool:
    """Connection failures, timeouts and connections dropped before an answer; not bad URLs, nor a TLS
    certificate the client refuses (it will not heal)."""
    if not isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError | httpx.ProxyError):
        return False
    cause: BaseException | None = exc
    for _ in range(16):  # a chain can loop; httpx's is three deep
        if cause is None:
            break
        if isinstance(cause, ssl.SSLCertVerificationError):
            return False
        cause = cause.__cause__ or cause.__context__
    return True


def backoff(retry_number: int, cap: float = MAX_DELAY) -> float:
    """Exponential backoff from INITIAL_DELAY, capped at `cap`, minus up to 25% jitter.

    The jitter spreads out clients that failed together, so they do not retry together.
    """
    delay = min(INITIAL_DELAY * 2.0 ** min(retry_number, 16), cap)  # past 16 any cap up to 9 hours holds anyway
    return delay * (1 - 0.25 * random.random())  # noqa: S311 - jitter, not cryptography


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait in seconds (`retry-after-ms`, or `Retry-After` in seconds or as an HTTP-date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        seconds = _number(milliseconds)
        if seconds is not None:
            return seconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # HTTP-dates are GMT
        return None
    return max(0.0, moment.timestamp() - time.time())


def _number(text: str) -> float | None:
    # Decimal ASCII digits only: float() would also read "0_1" as 1, "1e3", "infinity" and non-ASCII digits.
    if not re.fullmatch(_SECONDS, text):
        return None
    value = float(text)
    # Too many digits are infinite, not a wait; negative waits mean "now".
    return max(0.0, value) if math.isfinite(value) else None
