"""`redact`: every form a token takes when a server, a proxy or an exception message echoes it becomes
`[redacted]`, in every string and key of a result; a result without it is handed back as it is."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from cms_python._redaction import REDACTED, redact

# Every character an encoder treats specially, and plain runs between them.
TOKEN = "sk_live\\Ab/C'd\"e f+g%h=i"
PLAIN_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-_"


PLAIN = re.compile(r"[A-Za-z0-9\-._~]")  # what no encoder escapes


FORMS = {
    "raw": TOKEN,
    "repr of str": repr(TOKEN),
    "repr of bytes": repr(TOKEN.encode()),
    "repr of bytearray": repr(bytearray(TOKEN.encode())),
    "json": json.dumps(TOKEN),
    "json escaping slashes": json.dumps(TOKEN).replace("/", "\\/"),
    "json with unicode escapes": "".join(c if PLAIN.fullmatch(c) else f"\\u{ord(c):04x}" for c in TOKEN),
    "json inside repr": repr(json.dumps({"auth": TOKEN})),
    "json inside json": json.dumps(json.dumps({"auth": TOKEN})),
    "percent-encoded": quote(TOKEN, safe=""),
    "percent-encoded, lower-case hex": re.sub("%..", lambda match: match[0].lower(), quote(TOKEN, safe="")),
    "percent-encoded, slash kept": quote(TOKEN),
    "form-encoded": quote_plus(TOKEN),
    "python escapes": TOKEN.encode().decode("latin-1").encode("unicode_escape").decode(),
}


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_every_form_of_the_token_is_redacted(form):
    text = f"Bearer {form} (echoed)"
    result = redact({"error": text, "details": {text: [text, {"deep": text}]}}, TOKEN)
    dumped = json.dumps(result)
    assert REDACTED in result["error"], (form, result["error"])
    for fragment in ("Ab", "f+g", "f%2Bg", "g%h", "g%25h"):
        assert fragment not in dumped, (form, dumped)


def test_a_plain_token_in_ordinary_forms():
    text = f"token={PLAIN_TOKEN}&x={quote(PLAIN_TOKEN)} {PLAIN_TOKEN!r}"
    assert redact([text], PLAIN_TOKEN) == [f"token={REDACTED}&x={REDACTED} '{REDACTED}'"]


def test_a_token_of_special_characters_only():
    token = "!#$&()*+,;=:@?"
    assert redact([f"a {quote(token, safe='')} b {token} c"], token) == [f"a {REDACTED} b {REDACTED} c"]


def test_a_value_without_the_token_is_handed_back_as_it_is():
    # The common case costs a dump and a search, no copy: `is`, not `==`.
    answer = {"success": True, "data": [{"id": number, "name": f"item {number}"} for number in range(10_000)]}
    assert redact(answer, TOKEN) is answer
    assert redact(answer, PLAIN_TOKEN) is answer


def test_nesting_deeper_than_the_recursion_limit():
    value: Any = [f"x {TOKEN}"]
    for _ in range(20_000):
        value = [value]
    result = redact(value, TOKEN)
    for _ in range(20_000):
        result = result[0]
    assert result == [f"x {REDACTED}"]


def test_long_runs_of_backslashes_and_near_misses_end():
    # Neither can make matching go back and forth without end.
    text = "\\" * 20_000 + TOKEN[:-1] * 2_000 + "\\" * 20_000
    assert redact([text], TOKEN) == [text]


def test_values_that_are_not_json_are_still_searched():
    value = {"error": f"x {TOKEN}", "details": {"when": object, (1, 2): f"{TOKEN}"}}
    result = redact(value, TOKEN)
    assert result["error"] == f"x {REDACTED}"
    assert result["details"][(1, 2)] == REDACTED


def test_short_tokens_are_not_redacted():
    assert redact(["secret1"], "secret1") == ["secret1"]
