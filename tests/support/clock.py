"""A clock for the outbox's delivery thread that moves only when the thread waits: backoffs, Retry-After and pacing
are checked exactly, and take no real time."""

from __future__ import annotations

import threading


class FakeClock:
    """Time that moves only when the delivery thread waits: every wait is recorded and returns at once."""

    def __init__(self) -> None:
        self.time = 1_800_000_000.0
        self.waits: list[float] = []

    def now(self) -> float:
        return self.time

    def wait(self, wake: threading.Event, seconds: float) -> None:
        self.waits.append(seconds)
        self.time += seconds
        wake.clear()
