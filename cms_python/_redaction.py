"""Keeping the bearer token out of what the SDK hands back and out of httpx's and httpcore's log records.

A server, a proxy or an exception message may echo the token, as it is or escaped: `repr` and JSON double a
backslash and may escape a quote or a slash (`\\'`, `\\"`, `\\/`), URLs percent-encode (`%2F`, a space as
`+`), JSON and JavaScript write `\\u002f`. Every such form, nested ones too (`\\\\`), becomes `[redacted]`.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import threading
import weakref
from functools import lru_cache
from typing import Any, TypeVar, cast

#: Shorter tokens (test values) cannot be told apart from ordinary words in a message.
REDACTABLE_LENGTH = 8
REDACTED = "[redacted]"
#: The loggers of the libraries the SDK sends through, whose records can carry what a server sent.
LIBRARY_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)
# Characters no encoder escapes (RFC 3986's unreserved ones): every echoed form of the token holds its runs of
# these as they are. Compiled by `re`'s cache when a token is first seen, not by `import cms_python`.
_PLAIN = r"[A-Za-z0-9\-._~]+"
# How deeply nested escaping can get before a backslash run is no longer taken for an escaped token character.
_MAX_BACKSLASHES = 8
_T = TypeVar("_T")


class _Secret:
    """One token, and how to find it in text in any of its echoed forms."""

    __slots__ = ("_marker", "_pattern")

    def __init__(self, token: str) -> None:
        # The token's longest plain run is in every form: a text without it needs no regular expression.
        self._marker = max(re.findall(_PLAIN, token), key=len, default="")
        self._pattern = _Pattern(token)

    def might_be_in(self, text: str) -> bool:
        return self._marker in text

    def redact(self, text: str) -> str:
        return self._pattern.compiled().sub(REDACTED, text) if self._marker in text else text


class _Pattern:
    """The regular expression of every form of a token, compiled when first needed (a long token's takes time)."""

    __slots__ = ("_compiled", "_lock", "_token")

    def __init__(self, token: str) -> None:
        self._token = token
        self._compiled: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def compiled(self) -> re.Pattern[str]:
        with self._lock:
            if self._compiled is None:
                parts = re.findall(f"{_PLAIN}|.", self._token, re.DOTALL)
                self._compiled = re.compile("".join(_forms(part) for part in parts))
            return self._compiled


def _forms(part: str) -> str:
    """A regular expression for a run of plain characters (itself), or one other character's encodings."""
    if re.fullmatch(_PLAIN, part):
        return re.escape(part)
    code = ord(part)
    hex_digits = "".join(f"[{digit}{digit.upper()}]" if digit.isalpha() else digit for digit in f"{code:02x}")
    backslashes = rf"\\{{1,{_MAX_BACKSLASHES}}}"
    if part == "\\":
        itself = backslashes
    elif part in "'\"/":
        itself = rf"\\{{0,{_MAX_BACKSLASHES}}}{re.escape(part)}"
    else:
        itself = re.escape(part)
    forms = [itself, f"%{hex_digits}", rf"{backslashes}(?:u00|x){hex_digits}"]
    if part == " ":
        forms.append(r"\+")
    return f"(?:{'|'.join(forms)})"


@lru_cache(maxsize=64)
def _secret(token: str) -> _Secret:
    return _Secret(token)


def redact(value: _T, token: str) -> _T:
    """`value` (a JSON-like result) with every form of the token replaced, in every string and dict key.

    The common case, a value without the token, costs one `json.dumps` and one substring search, and returns
    `value` itself. Otherwise a copy is made, iteratively: the nesting depth of `details` is the server's choice.
    """
    if len(token) < REDACTABLE_LENGTH:
        return value
    secret = _secret(token)
    try:
        # The token's plain run survives JSON escaping: absent from the dump, it is nowhere in the value.
        if not secret.might_be_in(json.dumps(value, check_circular=False)):
            return value
    except (TypeError, ValueError, RecursionError):  # not JSON-like after all: look at every string
        pass
    root: list[Any] = [value]
    pending: list[tuple[Any, Any]] = [(root, 0)]
    while pending:
        container, key = pending.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = secret.redact(item)
        elif isinstance(item, dict):
            copy = {secret.redact(name) if isinstance(name, str) else name: inner for name, inner in item.items()}
            container[key] = copy
            pending.extend((copy, name) for name in copy)
        elif isinstance(item, list):
            container[key] = items = list(item)
            pending.extend((items, index) for index in range(len(items)))
    return cast(_T, root[0])


class _LibraryRecords(logging.Filter):
    """Redacts the tokens of live clients from httpx's and httpcore's records (a reason phrase or response
    headers a server sent, an exception message), before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _secrets
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is logging's to report, not ours
            return True
        redacted = message
        for secret in secrets:
            redacted = secret.redact(redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_FILTER = _LibraryRecords()
_lock = threading.Lock()
_clients_per_token: dict[str, int] = {}
# Tokens of clients gone, not yet counted out: see `_forget`.
_forgotten: collections.deque[str] = collections.deque()
# Replaced, never changed in place: the filter reads it without the lock.
_secrets: tuple[_Secret, ...] = ()


def redact_from_library_logs(owner: object, token: str) -> None:
    """Keep `token` out of httpx's and httpcore's log records for as long as `owner` (a client) lives."""
    if len(token) < REDACTABLE_LENGTH:
        return
    with _lock:
        if not _clients_per_token:
            for name in LIBRARY_LOGGERS:
                logging.getLogger(name).addFilter(_FILTER)  # adding it again is a no-op
        _clients_per_token[token] = _clients_per_token.get(token, 0) + 1
        _count_out_forgotten()
        _publish()
    weakref.finalize(owner, _forget, token)


def _forget(token: str) -> None:
    # A weakref finalizer runs wherever the garbage collector does, even inside the locked sections here, in the
    # thread holding the lock: waiting for it would never end. A token it cannot count out now stays looked for
    # until the next client comes or goes, which costs nothing but a search.
    _forgotten.append(token)
    if _lock.acquire(blocking=False):
        try:
            _count_out_forgotten()
            _publish()
        finally:
            _lock.release()


def _count_out_forgotten() -> None:
    """Under the lock: the clients gone since the last time."""
    while _forgotten:
        token = _forgotten.popleft()
        _clients_per_token[token] -= 1
        if not _clients_per_token[token]:
            del _clients_per_token[token]


def _publish() -> None:
    global _secrets  # noqa: PLW0603 - one registry per process, as the loggers are
    _secrets = tuple(_secret(token) for token in _clients_per_token)


def _after_fork_in_child() -> None:
    # The registry's lock was held across the fork (below), so the registry is whole; but a pattern's lock may
    # have been held by a thread the child does not have: new patterns, with locks of their own.
    _secret.cache_clear()
    _publish()
    _lock.release()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(before=_lock.acquire, after_in_parent=_lock.release, after_in_child=_after_fork_in_child)
