"""What the outbox tests share: each store as a target (`new_target`: a new file, or a new schema of the test
PostgreSQL server), outboxes on a fake clock (`make`), the record of what was sent when (`Recorder`), and
processes running `tests/outbox/child.py` (`child`, `finish`)."""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cms_python import CMSClient, Outbox
from cms_python._canonical import canonical_json, content_hash
from cms_python._outbox.store import Clock, NewEvent
from cms_python.testing import Sandbox

from ..conftest import LEAD, SALE
from ..support import ROOT
from ..support.clock import FakeClock
from ..support.processes import started


class Recorder:
    """Wraps the outbox's send: the time on `clock` (None: `time.monotonic`) and idempotency key of every attempt."""

    def __init__(self, outbox: Outbox, clock: Clock | None) -> None:
        self.attempts: list[tuple[float, str]] = []
        send = outbox._settings.send

        def recording(request: Any) -> Any:
            self.attempts.append((clock.now() if clock else time.monotonic(), request.idempotency_key))
            return send(request)

        outbox._settings.send = recording

    def times(self, key: str | None = None) -> list[float]:
        return [at for at, sent_key in self.attempts if key is None or sent_key == key]


@pytest.fixture(params=["file", "postgres"])
def new_target(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """`new_target()`: where a new, empty outbox is kept, in the store under test."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres").new_url  # type: ignore[no-any-return]
    numbers = itertools.count()
    return lambda: str(tmp_path / f"outbox{next(numbers)}.sqlite3")


#: The type of the `child` fixture.
Child = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def child() -> Iterator[Child]:
    """`child(MODE, TARGET, HOST, *ARGS)`: a process running `tests/outbox/child.py`, its output piped; killed if
    still running when the test ends, and reaped (see `started`)."""
    with contextlib.ExitStack() as processes:
        yield lambda *args: processes.enter_context(
            started([sys.executable, "-m", "tests.outbox.child", *args], cwd=ROOT, stdout=subprocess.PIPE)
        )


def finish(process: subprocess.Popen[str], timeout: float = 120) -> list[str]:
    """The lines a child printed, once it exited with status 0 within `timeout` seconds."""
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output.splitlines()


def summary(process: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    """The JSON a child printed last (what it flushed, its outbox's stats), once it exited with status 0."""
    return json.loads(finish(process, timeout)[-1])  # type: ignore[no-any-return]


@pytest.fixture
def make(cms_sandbox: Sandbox, new_target: Callable[[], str]) -> Iterator[Callable[..., tuple[Outbox, FakeClock]]]:
    """`make(target=None, **outbox_kwargs)`: an outbox on `target` (default: a new one) delivering to `cms_sandbox`,
    on a fake clock, no pacing."""
    made: list[Outbox] = []
    clients: list[CMSClient] = []

    def build(
        target: str | Path | None = None,
        *,
        client: CMSClient | None = None,
        real_time: bool = False,
        **kwargs: Any,
    ) -> tuple[Outbox, FakeClock]:
        if client is None:
            client = cms_sandbox.client()
            clients.append(client)
        kwargs.setdefault("rate_limit", None)
        outbox = Outbox(target or new_target(), client=client, **kwargs)
        clock = FakeClock()
        if not real_time:
            outbox._settings.clock = clock
        made.append(outbox)
        return outbox, clock

    yield build
    for outbox in made:
        outbox.close(timeout=0)
    for client in clients:
        client.close()


def sale(**overrides: Any) -> dict[str, Any]:
    return {**SALE, **overrides}


def lead(**overrides: Any) -> dict[str, Any]:
    return {**LEAD, **overrides}


def new_event(key: str, customer: str, fields: dict[str, Any] | None = None, kind: str = "lead") -> NewEvent:
    """An event to store directly (as `Outbox.track_*` would), with `fields` as its body."""
    body = canonical_json(fields if fields is not None else {"eventName": key, "customerExternalId": customer})
    return NewEvent(kind, key, customer, body, content_hash(kind, body), None)  # type: ignore[arg-type]
