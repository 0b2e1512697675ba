"""Processes for tests/outbox/test_processes.py and test_postgres.py:
`python -m tests.outbox.child MODE TARGET HOST [ARGS]`.

Each prints one line per acknowledged event (its index), flushed at once, so the parent knows which events a
`track_*` call returned for before it killed the process.
"""

from __future__ import annotations

import json
import os
import sys
import time

import httpx

from cms_python import CMSClient, Outbox

TOKEN = "outbox-child-token-7c2d"  # looked for in the file by the tests
EVENTS = 2000


def event(index: int) -> tuple[str, dict[str, object]]:
    """Event `index`: even ones are sales, odd ones leads; the key and invoice follow from the index."""
    common = {"event_name": "e", "customer_external_id": f"customer-{index % 97}", "idempotency_key": f"key-{index}"}
    if index % 2 == 0:
        return "track_sale", {
            **common,
            "click_id": "c",
            "invoice_id": f"inv-{index}",
            "amount": index,
            "currency": "USD",
        }
    return "track_lead", {**common, "click_id": "c"}


def enqueue(outbox: Outbox, indexes: range, pause: float = 0.0, *, quiet: bool = False) -> None:
    for index in indexes:
        method, arguments = event(index)
        result = getattr(outbox, method)(**arguments)
        if not result["success"]:
            raise SystemExit(f"event {index} not queued: {result}")
        if not quiet:
            print(index, flush=True)
        if pause:
            time.sleep(pause)


def main(mode: str, path: str, host: str, *args: str) -> None:
    if mode == "kill-target":  # enqueue from START on, slowly, until killed
        outbox = Outbox(path, TOKEN, host, rate_limit=None)
        enqueue(outbox, range(int(args[0]), EVENTS), pause=0.002)
        time.sleep(60)
    elif mode == "enqueue-and-flush":  # enqueue START..STOP, deliver everything in the file, report the counts
        outbox = Outbox(path, TOKEN, host, rate_limit=None)
        enqueue(outbox, range(int(args[0]), int(args[1])))
        flushed = outbox.flush(timeout=120)
        print(json.dumps({"flushed": flushed, **outbox.stats()}), flush=True)
        outbox.close()
    elif mode == "enqueue-and-exit":  # no flush, no close: the interpreter's exit must deliver
        outbox = Outbox(path, TOKEN, host, flush_on_exit=float(args[0]))
        enqueue(outbox, range(1))
    elif mode == "fork":  # enqueue in the parent, fork while it delivers, enqueue in the child, both flush
        outbox = Outbox(path, TOKEN, host, rate_limit=None)  # path may be ":memory:"
        enqueue(outbox, range(100))
        time.sleep(0.05)
        pid = os.fork()
        if pid == 0:
            print(json.dumps({"child_pending_at_start": outbox.stats()["pending"]}), flush=True)
            enqueue(outbox, range(100, 150))
            flushed = outbox.flush(timeout=60)
            outbox.close()
            os._exit(0 if flushed else 3)
        flushed = outbox.flush(timeout=60)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"flushed": flushed, "child_status": status, **outbox.stats()}), flush=True)
        outbox.close()
    elif mode == "slow-batch":  # enqueue COUNT events with a 3 s lease, say "claimed" once sending, flush
        client = CMSClient(TOKEN, host, timeout=httpx.Timeout(0.25))  # an attempt takes 1 s at most
        outbox = Outbox(path, client=client, rate_limit=None, lease=3.0)
        enqueue(outbox, range(int(args[0])), quiet=True)
        while not outbox.stats()["delivered"] and not _sending(outbox):
            time.sleep(0.01)
        print("claimed", flush=True)
        flushed = outbox.flush(timeout=60)
        print(json.dumps({"flushed": flushed, **outbox.stats()}), flush=True)
        outbox.close()
        client.close()
    elif mode == "deliver":  # deliver what is pending at RATE a minute (0: no pacing), with LEASE; report
        rate, lease = float(args[0]), float(args[1])
        client = CMSClient(TOKEN, host, timeout=httpx.Timeout(0.25))  # an attempt takes 1 s at most
        outbox = Outbox(path, client=client, rate_limit=rate or None, lease=lease, flush_on_exit=0)
        print("started", flush=True)
        flushed = outbox.flush(timeout=120)
        print(json.dumps({"flushed": flushed, **outbox.stats()}), flush=True)
        outbox.close()
        client.close()
    else:
        raise SystemExit(f"unknown mode {mode}")


def _sending(outbox: Outbox) -> bool:
    delivery = outbox._delivery
    return delivery is not None and delivery.in_flight is not None


if __name__ == "__main__":
    main(*sys.argv[1:])
