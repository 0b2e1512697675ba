"""What the web-framework tests share: hostile click ids, and the sandbox served over HTTP for an Outbox."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cms_python.testing import SANDBOX_TOKEN, Sandbox

#: The Set-Cookie a plain-http visit to `/?cms_rf=abc` gets.
ABC_COOKIE = "cms_rf=abc; Max-Age=7776000; Path=/; SameSite=Lax"

#: `cms_rf` query values (percent-encoded as in a URL) that must be ignored: no click id, no cookie, no 500.
HOSTILE_QUERY_VALUES = {
    "CR/LF": "a%0D%0ASet-Cookie:%20evil=1",
    "NUL": "a%00b",
    "10 KB": "x" * 10_240,
    "non-ASCII": "%C3%A9t%C3%A9",
    "cookie attributes": "a%3BDomain%3Devil.example",
    "space": "a+b",
    "empty": "",
    "256 characters": "x" * 256,
}


@dataclass
class ServedSandbox:
    """A sandbox on 127.0.0.1: an Outbox delivers to `url` with `token`. `events` gets a line each time the
    sandbox answers (after any `delay_next`), so a test can put its own lines in order with them."""

    sandbox: Sandbox
    url: str
    token: str = SANDBOX_TOKEN
    events: list[str] = field(default_factory=list)


@contextmanager
def served_sandbox(sandbox: Sandbox) -> Iterator[ServedSandbox]:
    """`sandbox` (the plugin's `cms_sandbox`) served over HTTP while the block runs."""
    events: list[str] = []
    with sandbox.serve(log=lambda line: events.append(f"sandbox answered {line}")) as url:
        yield ServedSandbox(sandbox, url, events=events)
