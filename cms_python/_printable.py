"""Text from elsewhere (a server's answer, a client's request, a user's file), made safe and short for a log
record, a terminal or a message."""

from __future__ import annotations

import reprlib

#: How many characters of a long string a message quotes.
QUOTED_CHARACTERS = 50
# Containers cut to a few items and levels (no recursion into a deeply nested value); other objects' reprs to
# about as many characters as a string is quoted with.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxother = _SHORT_REPR.maxlong = QUOTED_CHARACTERS + 10


def printable(text: str) -> str:
    """`text` with every character that is not printable escaped as in a Python string literal (`\\x1b`,
    `\\x0a`, `\\u2028`, `\\ud800`): no line break (a forged log line), escape sequence, invisible or
    bidirectional control, or lone surrogate (which no encoding can write) stays raw."""
    if text.isprintable():
        return text
    return "".join(character if character.isprintable() else _escaped(character) for character in text)


def quoted(value: object) -> str:
    """`value` as a message quotes it: its repr, escaped as a Python literal; a string longer than
    `QUOTED_CHARACTERS` cut to its start and its length (`'aaaa…' (5,000,000 characters)`), so that a 5 MB cell
    makes a one-line message; a container cut to a few items and levels."""
    if not isinstance(value, str):
        return _SHORT_REPR.repr(value)
    text = str.__str__(value)  # an exact str: no method of a subclass runs
    if len(text) <= QUOTED_CHARACTERS:
        return repr(text)
    return f"{text[:QUOTED_CHARACTERS] + '…'!r} ({len(text):,} characters)"


def _escaped(character: str) -> str:
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
