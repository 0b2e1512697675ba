"""Keeping the bearer token out of what the SDK hands back: a server or proxy may echo it."""

from __future__ import annotations

from typing import Any, TypeVar, cast

#: Shorter tokens (test values) cannot be told apart from ordinary words in a message.
REDACTABLE_LENGTH = 8
_T = TypeVar("_T")


def redact(value: _T, token: str) -> _T:
    """A copy of a JSON-like value with the token replaced in every string, dict keys included.

    Iterative, not recursive: the nesting depth of `details` is the server's choice.
    """
    if len(token) < REDACTABLE_LENGTH:
        return value
    root: list[Any] = [value]
    pending: list[tuple[Any, Any]] = [(root, 0)]
    while pending:
        container, key = pending.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = item.replace(token, "[redacted]")
        elif isinstance(item, dict):
            copy = {_redact_key(name, token): inner for name, inner in item.items()}
            container[key] = copy
            pending.extend((copy, name) for name in copy)
        elif isinstance(item, list):
            container[key] = items = list(item)
            pending.extend((items, index) for index in range(len(items)))
    return cast(_T, root[0])


def _redact_key(name: object, token: str) -> object:
    return name.replace(token, "[redacted]") if isinstance(name, str) else name
