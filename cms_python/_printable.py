"""Text from elsewhere (a server's answer, a client's request, a user's file), made safe and short for a log
record, a terminal or a message."""

from __future__ import annotations

import logging
import reprlib
import traceback
from collections.abc import Callable

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
    return escaped(text, _python_escape)


def escaped(text: str, notation: Callable[[str], str]) -> str:
    """`text` with every character that is not printable (`str.isprintable()`) written in `notation`: the one
    rule of what a log record or a terminal gets raw, whatever the notation (`printable`'s, or JSON's in the
    JSON the `cms` commands print)."""
    if text.isprintable():
        return text
    return "".join(character if character.isprintable() else notation(character) for character in text)


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


def _python_escape(character: str) -> str:
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class _Escaping(logging.Filter):
    """Escapes a record's whole message with `printable`, whatever its arguments hold, and the text of the
    exceptions in its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and record.exc_text is None:
            record.exc_text = _escaped_traceback(record.exc_info[1])  # what handlers write after the message
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is logging's to report, not ours
            return True
        if not message.isprintable():
            record.msg, record.args = printable(message), None
        return True


def _escaped_traceback(error: BaseException) -> str:
    """`error`'s traceback as `logging` writes it, but with the text of each exception in it (and of those it was
    raised from or while handling) escaped with `printable`: an exception quoting a server's words, or a caller's
    `on_failure` raising with them, cannot start a line of its own."""
    texts: set[str] = set()
    chained, seen = [error], set()
    while chained:
        current = chained.pop()
        if id(current) not in seen:
            seen.add(id(current))
            texts.update(traceback.format_exception_only(current))
            chained += [linked for linked in (current.__cause__, current.__context__) if linked is not None]
    lines = traceback.TracebackException.from_exception(error).format()
    return "".join(printable(line[:-1]) + "\n" if line in texts else line for line in lines).removesuffix("\n")


_ESCAPING = _Escaping()
# A library logs only where the app configured logging (no "last resort" output to stderr).
_NO_OUTPUT = logging.NullHandler()


def sdk_logger(name: str) -> logging.Logger:
    """The logger `name` ("cms_python" or below), for every record the SDK writes: each record's message is
    escaped with `printable` before any handler sees it, since a server's text (an error `type`), a path or a
    visitor's value can hold a line break that would forge log lines. A filter acts only on its own logger's
    records, so every logger of the SDK is made here."""
    logger = logging.getLogger(name)
    logger.addFilter(_ESCAPING)  # adding it again is a no-op
    if name == "cms_python":
        logger.addHandler(_NO_OUTPUT)
    return logger
