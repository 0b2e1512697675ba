"""What the `cms` commands print: strict JSON whatever a server sent, and stdout writes that survive a gone reader."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime
from typing import Any

from .._printable import escaped

_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def strict_json(value: Any, *, indent: int | None = 2) -> str:
    """`value` as strict JSON (RFC 8259), whatever a server sent: NaN and infinities, which it has no words for,
    become null (as in JavaScript's JSON.stringify); every character a terminal could act on or no encoding can
    write (not printable, as `printable` escapes them: a control or escape sequence, a bidirectional override,
    a line separator, a lone surrogate) is written as JSON's `\\uXXXX`, so the text reads back the same;
    datetimes are ISO 8601. `indent=None`: one line."""
    try:
        text = json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=False, default=_iso)
    except ValueError:
        finite = json.loads(json.dumps(value, default=_iso), parse_constant=lambda _: None)
        text = json.dumps(finite, indent=indent, ensure_ascii=False, allow_nan=False)
    # json.dumps escapes line breaks inside strings: those between lines are the indentation's, and stay.
    return "\n".join(escaped(line, _json_escape) for line in text.split("\n"))


def write(text: str) -> None:
    """Print `text` on stdout. Once the reader has gone (`cms ... | head -1`), the rest is discarded: what the
    command did is not undone by it, and its exit status stays the command's."""
    try:
        try:
            print(text, flush=True)
        except UnicodeEncodeError:  # a stdout that cannot write every character (PYTHONIOENCODING=ascii)
            # JSON's escapes, valid in the JSON the commands print (non-ASCII only appears inside its strings).
            print(_NON_ASCII.sub(lambda match: _json_escape(match[0]), text), flush=True)
    except BrokenPipeError:
        # Later writes, and the interpreter's last flush, go to /dev/null instead of raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _json_escape(character: str) -> str:
    # \uXXXX (a surrogate pair beyond U+FFFF): valid inside a JSON string, the only place these characters are.
    return json.dumps(character)[1:-1]


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
