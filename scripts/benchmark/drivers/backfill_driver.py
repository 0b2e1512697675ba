"""`import_events` on a CSV file into an outbox file, pacing off, in a fresh interpreter of its own, so that its
peak RSS is the import's own (run by benchmark/backfill.py).

argv: the CSV file, the outbox path, the host. Prints a JSON object: rows, seconds reading and queueing, the
importing thread's CPU seconds queueing, the process's peak RSS in MB. Delivery is not measured: the import
stops once everything is queued.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time

from cms_python import CMSClient, ImportSummary, import_events


def main() -> None:
    path, outbox, host = sys.argv[1:4]
    marks: dict[str, float] = {}
    cpu: dict[str, float] = {}
    queued = threading.Event()

    def progress(summary: ImportSummary) -> None:  # called in this (the importing) thread
        marks.setdefault(summary.state, time.perf_counter())
        cpu.setdefault(summary.state, time.thread_time())
        if summary.state == "delivering":  # everything is queued: the figure is taken
            queued.set()

    start = time.perf_counter()
    with CMSClient("bench-token", host) as client:
        summary = import_events(path, outbox, client=client, rate_limit=None, on_progress=progress, stop=queued)
    if summary.invalid or summary.queued != summary.rows:
        raise SystemExit(f"unexpected summary: {summary}")
    result = {
        "rows": summary.rows,
        "reading_s": marks["queueing"] - start,
        "queueing_s": marks["delivering"] - marks["queueing"],
        "queueing_cpu_s": cpu["delivering"] - cpu["queueing"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
