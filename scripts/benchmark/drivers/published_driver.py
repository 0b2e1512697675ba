"""The published cms-python-client 1.0.0, in a throwaway venv (run by benchmark/published.py).

argv: the token, then one host per client. Prints "ready" once each client got the 1.0.0 reply and is warmed up;
then each stdin line "<client index> <calls>" runs that many sequential `track_lead` calls and prints events/s.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any

# Imported by name: the venv's cms_python is 1.0.0, not the one this checkout type-checks against.
cms_python: Any = importlib.import_module("cms_python")
PUBLISHED_RESULT = {"status": True, "data": "x"}


def main() -> None:
    clients = [cms_python.CMSClient(token=sys.argv[1], host=host) for host in sys.argv[2:]]
    lead = {"click_id": "id_123", "event_name": "signup_started", "customer_external_id": "user_42"}
    for client in clients:
        result = client.track_lead(**lead)
        if result != PUBLISHED_RESULT:
            raise SystemExit(f"unexpected result: {result!r}")
        for _ in range(20):
            client.track_lead(**lead)
    print("ready", flush=True)
    for line in sys.stdin:
        index, calls = map(int, line.split())
        client = clients[index]
        start = time.perf_counter()
        for _ in range(calls):
            client.track_lead(**lead)
        print(calls / (time.perf_counter() - start), flush=True)


if __name__ == "__main__":
    main()
