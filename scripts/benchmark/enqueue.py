"""Outbox enqueues: `Outbox.track_lead` on the caller's thread, µs per call (median and p99 of each round's calls),
for durability "process" (also from a coroutine in a running event loop), "power" and ":memory:", default pacing
(the delivery thread sends one a second meanwhile); and "process" while its delivery thread sends flat out
(`rate_limit=None`, a backlog queued before each round, so that it never waits for work; drained after it, so
that its thread is not running during the other contenders' calls). Beside them, the floor of a durable enqueue
on this machine: SQLite alone committing one row with a unique key, as "process" does. Other scenarios'
enqueuers (another SDK's, another store's) join the group `GROUP`, round by round.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import sqlite3
import statistics
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cms_python import Outbox

from .common import ENQUEUE, LEAD_BODY, TOKEN, Contender, Goal, Measure, Scenario, Settings, p99

#: The group of every enqueuer, whichever scenario it comes from.
GROUP = "enqueue"
_batches = itertools.count(1)
#: Events queued before each round of the outbox delivering flat out (about a second of its sending, and more
#: accrue: an enqueue is faster than a delivery).
FLAT_OUT_BACKLOG = 1000
#: The longest the outbox delivering flat out may take to deliver what a round queued.
FLAT_OUT_DRAIN = 120.0


def enqueue_times(outbox: Any, calls: int) -> list[float]:
    """The µs each of `calls` `outbox.track_lead` calls took, each for a customer not seen before."""
    batch, track_lead, clock, times = next(_batches), outbox.track_lead, time.perf_counter, []
    for number in range(calls):
        customer = f"user_{batch}_{number}"
        start = clock()
        result = track_lead(click_id="id_123", event_name="signup_started", customer_external_id=customer)
        times.append(clock() - start)
        if not result["success"]:
            raise RuntimeError(f"the outbox refused an event: {result!r}")
    return [seconds * 1e6 for seconds in times]


class CommitFloor:
    """SQLite alone, as the file outbox uses it (WAL, `synchronous=NORMAL`): one INSERT of a row with a unique
    random key and a lead's body, committed; no checks, no SDK."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode = WAL").fetchall()
        self.connection.execute("PRAGMA synchronous = NORMAL")
        self.connection.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, body TEXT)")
        self.body = json.dumps(LEAD_BODY)

    def times(self, calls: int) -> list[float]:
        keys = [str(uuid.uuid4()) for _ in range(calls)]  # made beforehand: the SDK's own work, not the floor's
        insert, body, clock, times = self.connection.execute, self.body, time.perf_counter, []
        for key in keys:
            start = clock()
            insert("INSERT INTO events (key, body) VALUES (?, ?)", (key, body))
            times.append(clock() - start)
        return [seconds * 1e6 for seconds in times]

    def close(self) -> None:
        self.connection.close()


def enqueuer(
    name: str, label: str, section: str, times: Callable[[], list[float]]
) -> tuple[dict[str, Measure], Contender]:
    """The median and p99 measures of an enqueuer (`enqueue_<name>`, `enqueue_<name>_p99`), and its contender."""
    measures = {
        f"enqueue_{name}": Measure(f"{label}, median", "µs/call", section),
        f"enqueue_{name}_p99": Measure(f"{label}, p99", "µs/call", section),
    }

    def contender() -> dict[str, float]:
        batch = times()
        return {f"enqueue_{name}": statistics.median(batch), f"enqueue_{name}_p99": p99(batch)}

    return measures, contender


class Enqueue(Scenario):
    """`Outbox.track_lead` per call on this thread, one outbox per durability, default pacing (60 a minute)."""

    def __init__(self, host: str, settings: Settings, directory: Path) -> None:
        super().__init__()
        self._calls = settings.enqueue_calls
        self._outboxes = {
            "process": Outbox(directory / "process.sqlite3", TOKEN, host),
            "power": Outbox(directory / "power.sqlite3", TOKEN, host, durability="power"),
            "memory": Outbox(":memory:", TOKEN, host),
            "flat_out": Outbox(directory / "flat-out.sqlite3", TOKEN, host, rate_limit=None),
        }
        self._floor = CommitFloor(directory / "floor.sqlite3")
        for outbox in self._outboxes.values():  # warm up: the thread starts, statements are compiled
            enqueue_times(outbox, 50)
        labels = {
            "process": 'Outbox "process"',
            "process_async": 'Outbox "process", in an event loop',
            "power": 'Outbox "power"',
            "memory": 'Outbox ":memory:"',
            "flat_out": 'Outbox "process", its thread delivering flat out',
            "floor": 'SQLite alone: one row committed, as "process" does',
        }
        group = self.groups[GROUP] = []
        for kind, label in labels.items():
            measures, contender = enqueuer(kind, label, ENQUEUE, functools.partial(self._us_per_call, kind))
            self.measures |= measures
            group.append(contender)

    def _us_per_call(self, kind: str) -> list[float]:
        if kind == "process_async":  # the same calls from a coroutine, as an async web handler makes them

            async def handler() -> list[float]:
                return enqueue_times(self._outboxes["process"], self._calls)

            return asyncio.run(handler())
        if kind == "floor":
            return self._floor.times(self._calls)
        outbox = self._outboxes[kind]
        if kind != "flat_out":
            return enqueue_times(outbox, self._calls)
        enqueue_times(outbox, FLAT_OUT_BACKLOG)
        times = enqueue_times(outbox, self._calls)
        if not outbox.flush(timeout=FLAT_OUT_DRAIN):
            raise RuntimeError("the outbox delivering flat out did not deliver its events")
        return times

    def goals(self, measures: Mapping[str, Measure]) -> list[Goal]:
        return [Goal('Outbox ":memory:" enqueue, median', measures["enqueue_memory"].median, 15.0, "µs", False)]

    def close(self) -> None:
        for outbox in self._outboxes.values():
            outbox.close(timeout=0)
        self._floor.close()
