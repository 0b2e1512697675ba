"""One of the processes delivering a PostgreSQL outbox's backlog, unpaced (run by benchmark/postgres.py, one or
several at once).

argv: the database URL, the token, the host. Prints "ready" once its imports are done; then, on a line on stdin,
runs `Outbox(url, token, host, rate_limit=None)` and `flush()`, prints {"flushed": true} (false if it timed out),
and closes the outbox.
"""

from __future__ import annotations

import json
import sys

import cms_python._outbox.postgres  # noqa: F401  (imported before the signal: what is timed is the delivery)
from cms_python import Outbox


def main() -> None:
    url, token, host = sys.argv[1:4]
    print("ready", flush=True)
    sys.stdin.readline()
    outbox = Outbox(url, token, host, rate_limit=None)
    flushed = outbox.flush(timeout=300)
    print(json.dumps({"flushed": flushed}), flush=True)
    outbox.close()


if __name__ == "__main__":
    main()
