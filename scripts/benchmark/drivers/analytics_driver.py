"""Segment's and PostHog's Python SDKs, enqueueing, in a throwaway venv (run by benchmark/analytics.py).

argv: the host. Prints "ready" once both are warmed up; then each stdin line "<name> <calls>" times that many
calls of one SDK's enqueue and prints the µs of each, as a JSON list.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

# Imported by name: they are installed in the venv this runs in, not where the bench is type-checked.
posthog: Any = importlib.import_module("posthog")
analytics: Any = importlib.import_module("segment.analytics")


def main() -> None:
    logging.disable(logging.CRITICAL)
    host = sys.argv[1]
    analytics.write_key = "bench-write-key"
    analytics.host = host
    client = posthog.Posthog("phc_bench_key", host=host)
    calls: dict[str, Callable[[int], object]] = {
        "segment": lambda number: analytics.track(f"user_{number}", "signup_started", {"click_id": "id_123"}),
        "posthog": lambda number: client.capture(
            "signup_started", distinct_id=f"user_{number}", properties={"click_id": "id_123"}
        ),
    }
    for call in calls.values():  # warm up: consumer threads started
        for number in range(50):
            call(number)
    print("ready", flush=True)
    for line in sys.stdin:
        name, count = line.split()
        call, clock, times = calls[name], time.perf_counter, []
        for number in range(int(count)):
            start = clock()
            call(number)
            times.append((clock() - start) * 1e6)
        print(json.dumps(times), flush=True)


if __name__ == "__main__":
    main()
