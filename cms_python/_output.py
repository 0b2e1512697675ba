"""What the `cms` commands print: strict JSON whatever a server sent, and stdout writes that survive a gone reader."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime
from typing import Any

_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def strict_json(value: Any, *, indent: int | None = 2) -> str:
    """`value` as strict JSON (RFC 8259), whatever a server sent: NaN and infinities, which it has no words for,
    become null (as in JavaScript's JSON.stringify); lone surrogates, which no encoding can write, are escaped;
    datetimes are ISO 8601. `indent=None`: one line."""
    try:
        text = json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=False, default=_iso)
    except ValueError:
        finite = json.loads(json.dumps(value, default=_iso), parse_constant=lambda _: None)
        text = json.dumps(finite, indent=indent, ensure_ascii=False, allow_nan=False)
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match[0]):04x}", text)


def write(text: str) -> None:
    """Print `text` on stdout. Once the reader has gone (`cms ... | head -1`), the rest is discarded: what the
    command did is not undone by it, and its exit status stays the command's."""
    try:
        try:
            print(text, flush=True)
        except UnicodeEncodeError:  # a stdout that cannot write every character (PYTHONIOENCODING=ascii)
            # JSON's escapes, valid in the JSON the commands print (non-ASCII only appears inside its strings).
            print(_NON_ASCII.sub(lambda match: json.dumps(match[0])[1:-1], text), flush=True)
    except BrokenPipeError:
        # Later writes, and the interpreter's last flush, go to /dev/null instead of raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
