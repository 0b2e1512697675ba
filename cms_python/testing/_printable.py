"""Text a client sent, made safe to print on a terminal."""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with every character that is not printable escaped as in a Python string literal (`\\x1b`,
    `\\x0a`, `\\ud800`): no escape sequence, line break, invisible or bidirectional control, or lone surrogate
    (which no encoding can write) reaches the terminal raw."""
    if text.isprintable():
        return text
    return "".join(character if character.isprintable() else _escaped(character) for character in text)


def _escaped(character: str) -> str:
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
