"""Outbox delivery: an `Outbox` with `rate_limit=None` delivering stored events (from construction to `flush()`),
events/s, against sequential `CMSClient.track_lead` calls/s (the sync contender's µs/call, inverted)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from cms_python import Outbox
from cms_python._outbox.sqlite import SQLiteStore  # to store events beforehand

from .common import ENQUEUE, TOKEN, Goal, Measure, Scenario, Settings, sample, stored_lead


class OutboxDelivery:
    """An `Outbox` without pacing delivering `events` stored events: from construction to `flush()`, events/s."""

    def __init__(self, host: str, events: int, directory: Path) -> None:
        self.host, self.events, self.directory = host, events, directory
        self.runs = 0

    def events_per_second(self) -> float:
        self.runs += 1
        path = self.directory / f"delivery{self.runs}.sqlite3"
        store = SQLiteStore(str(path))  # the events are stored beforehand, as by an app's enqueues
        for number in range(self.events):
            store.enqueue(stored_lead(f"user_{number}", time.time()), now=time.time(), max_pending=10**9)
        store.close()
        start = time.perf_counter()
        outbox = Outbox(path, TOKEN, self.host, rate_limit=None)
        if not outbox.flush(timeout=120):
            raise RuntimeError("the outbox did not deliver its events")
        elapsed = time.perf_counter() - start
        outbox.close()
        return self.events / elapsed


class Delivery(Scenario):
    def __init__(self, host: str, settings: Settings, directory: Path) -> None:
        super().__init__()
        events = settings.delivery_events
        self.measures = {
            "outbox_delivery": Measure(f"Outbox delivery, rate_limit=None, {events} events", "events/s", ENQUEUE),
            "sequential_calls": Measure("CMSClient.track_lead sequential (from µs/call)", "calls/s", ENQUEUE),
        }
        delivery = OutboxDelivery(host, events, directory)
        self.groups["delivery"] = [sample("outbox_delivery", delivery.events_per_second)]

    def after_rounds(self, measures: Mapping[str, Measure]) -> None:
        self.measures["sequential_calls"].samples = [1e6 / value for value in measures["sync_sdk"].samples]

    def goals(self, measures: Mapping[str, Measure]) -> list[Goal]:
        ratio = measures["outbox_delivery"].median / measures["sequential_calls"].median
        return [Goal("Outbox delivery (no pacing) / sequential CMSClient", ratio, 0.9, "x", True)]
