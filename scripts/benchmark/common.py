"""What the scenarios share: the lead they send, the canned replies, the settings, and `Scenario`, the shape each
scenario module gives what it measures and its goals."""

from __future__ import annotations

import os
import statistics
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cms_python._base import USER_AGENT  # the exact User-Agent the SDK sends, for the raw contenders
from cms_python._canonical import canonical_json, content_hash
from cms_python._outbox.store import NewEvent

TOKEN = "bench-token-0123456789"  # the canned server accepts anything
# What the SDK puts on the wire for its track_lead(...) calls here, for the raw httpx contenders.
LEAD_BODY = {"eventName": "signup_started", "customerExternalId": "user_42", "clickId": "id_123"}
SDK_REPLY = {"success": True, "message": "Event tracked successfully", "data": {"id": "x"}}
PUBLISHED_REPLY = {"status": True, "data": "x"}
# The latency scenario: the canned server answers paths under LATENCY_PREFIX this late, a realistic API round trip.
API_LATENCY_MS = 20
LATENCY_PREFIX = "/latency"
#: The programs the bench runs in fresh interpreters (plain scripts: they import nothing of the bench).
DRIVERS = Path(__file__).resolve().parent / "drivers"
#: `python scripts/bench.py`, which the canned server is started as (`--serve`).
ENTRY = Path(__file__).resolve().parents[1] / "bench.py"

# The report's sections (each measure's `scenario`), in the order they first appear.
NO_LATENCY = "loopback, replies at once"
ENQUEUE = "background delivery: an enqueue on the caller's thread; an outbox's delivery"
WITH_LATENCY = f"every reply {API_LATENCY_MS} ms late (API latency scenario)"
BACKFILL = "backfill: cms import's work, pacing off, once per run"
IMPORTS = "fresh interpreters, taking turns"


@dataclass
class Settings:
    rounds: int
    sync_calls: int
    async_leads: int
    import_samples: int  # fresh interpreters per import statement, in all (not per round)
    published_calls: int
    published: bool
    latency_leads: int  # the API latency scenario's async leads per run
    latency_published_calls: int  # and its published client's sequential calls per run
    enqueue_calls: int  # outbox (and analytics SDK) enqueues per contender per round
    delivery_events: int  # events an outbox delivers per round
    analytics: bool
    backfill_rows: int  # the generated CSV's rows for the backfill scenario
    postgres_transactions: int  # app transactions (an order and its sale) per round, PostgreSQL
    postgres_backlog: int  # stored events delivered per run by one and by three processes, PostgreSQL
    sizes: tuple[int, ...] = ()  # `--in-flight`: the SDK also with these in-flight limits


@dataclass
class Measure:
    label: str
    unit: str
    scenario: str = NO_LATENCY
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def minimum(self) -> float:
        return min(self.samples)


@dataclass
class Goal:
    name: str
    value: float
    limit: float
    unit: str
    higher_is_better: bool

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit


#: A contender's figures for one round, by the name of the measure each goes to.
Sample = dict[str, float]
#: Runs a contender's batch once.
Contender = Callable[[], Sample]


def sample(name: str, measure: Callable[[], float]) -> Contender:
    """A contender whose batch gives one figure, that of measure `name`."""
    return lambda: {name: measure()}


class Scenario:
    """One part of the bench. `measures`: what it reports, in order. `groups`: its contenders by group: each round
    runs every group's contenders once, in alternating order, so that drift (CPU frequency, other load) hits all
    alike; contenders of other scenarios may join a group (e.g. another SDK's enqueues among the outbox's)."""

    def __init__(self) -> None:
        self.measures: dict[str, Measure] = {}
        self.groups: dict[str, list[Contender]] = {}

    def after_rounds(self, measures: Mapping[str, Measure]) -> None:
        """What is measured once per run, after the rounds, and figures derived from the rounds' (`measures`: every
        scenario's)."""

    def goals(self, measures: Mapping[str, Measure]) -> list[Goal]:
        """The goals it judges, from every scenario's `measures`."""
        return []

    def gains(self, measures: Mapping[str, Measure]) -> list[Goal]:
        """Ratios it reports without judging them."""
        return []

    def close(self) -> None:
        """Release what it holds (clients, processes)."""


def stored_lead(customer: str, stamped_at: float) -> NewEvent:
    """A lead of `customer` as an app's `Outbox.track_lead` stores it: for backlogs stored beforehand."""
    body = canonical_json({**LEAD_BODY, "customerExternalId": customer})
    return NewEvent("lead", str(uuid.uuid4()), customer, body, content_hash("lead", body), stamped_at)


def check_sdk_result(result: Any) -> None:
    if not (isinstance(result, dict) and result.get("success") and result.get("data") == SDK_REPLY["data"]):
        raise RuntimeError(f"the SDK did not get the canned success: {result!r}")


def raw_headers() -> dict[str, str]:
    # One fixed Idempotency-Key: making a fresh uuid4 per call is part of the SDK's work, not the baseline's.
    return {
        "Authorization": f"Bearer {TOKEN}",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": str(uuid.uuid4()),
        "Content-Type": "application/json",
    }


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def foreign_environment() -> dict[str, str]:
    """For an interpreter of a throwaway venv: not this venv's packages (nor this checkout's `cms_python`)."""
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
