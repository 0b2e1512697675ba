"""The sandbox served over HTTP on 127.0.0.1, for what talks to it from another thread or process (an Outbox, a
web example, `cms import`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cms_python.testing import SANDBOX_TOKEN, Sandbox


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
        yield ServedSandbox(sandbox, url, sandbox.token or SANDBOX_TOKEN, events)
