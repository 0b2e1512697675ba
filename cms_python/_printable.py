"""Text from elsewhere (a server's answer, a client's request), made safe for a log record or a terminal."""

from __future__ import annotations

from collections.abc import Callable


def printable(text: str) -> str:
    """`text` with every character that is not printable escaped as in a Python string literal (`\\x1b`,
    `\\x0a`, `\\u2028`, `\\ud800`): no line break (a forged log line), escape sequence, invisible or
    bidirectional control, or lone surrogate (which no encoding can write) stays raw."""
    return escaped(text, _python_escape)


def escaped(text: str, notation: Callable[[str], str]) -> str:
    """`text` with every character that is not printable (`str.isprintable()`) written in `notation`: the one
    rule of what a log record or a terminal gets raw, whatever the notation (`printable`'s, or JSON's in the
    JSON the `cms` commands print)."""
    if text.isprintable():
        return text
    return "".join(character if character.isprintable() else notation(character) for character in text)


def _python_escape(character: str) -> str:
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
