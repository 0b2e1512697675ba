"""`cms sandbox`: the sandbox served over HTTP on 127.0.0.1 until stopped, then what it recorded."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from .._base import HOST_VARIABLE, TOKEN_VARIABLE
from ..testing import Sandbox
from ..testing._summary import summary
from .arguments import add_command, port
from .output import write
from .signals import stop_on_signals, wait_for


def register(commands: Any) -> None:
    """Add `cms sandbox`."""
    sandbox = add_command(
        commands,
        "sandbox",
        "Run an in-memory CutMeShort API over HTTP, for local development.",
        f"""\
It follows the real API's rules (request checks, deferred attribution, one sale per invoice, Idempotency-Key
replays) and forgets everything when stopped. Ctrl-C stops it and prints what it recorded.

examples:
  cms sandbox --port 8787
  # in another shell:
  export {HOST_VARIABLE}=http://127.0.0.1:8787 {TOKEN_VARIABLE}=anything
  cms track-lead --click-id id_123 --event-name signup_started --customer-external-id user_42
  # accept one token only, and rate-limit like the real API:
  cms sandbox --token my-test-token --rate-limit 60
""",
        _sandbox,
    )
    sandbox.add_argument("--port", type=port, default=8787, help="port to listen on; 0 picks a free one (default 8787)")
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; ::1 for IPv6)")
    sandbox.add_argument("--token", help="accept only this bearer token (default: any non-empty token)")
    sandbox.add_argument(
        "--rate-limit", type=int, metavar="N", help="allow N requests per minute per token (429 past it)"
    )
    sandbox.add_argument("--quiet", action="store_true", help="do not log each request to stderr")


def _sandbox(args: argparse.Namespace) -> int:
    try:
        sandbox = Sandbox(args.token, rate_limit=args.rate_limit)
    except ValueError as exc:
        args.parser.error(str(exc))
    try:
        with stop_on_signals() as stop, sandbox.serve(args.port, args.host, log=None if args.quiet else _log) as url:
            write(f"CutMeShort sandbox listening on {url} (Ctrl-C to stop)")
            # Quoted for the shell: an IPv6 URL's brackets are a glob pattern (zsh refuses an unmatched one).
            token = shlex.quote(args.token or "any-token")
            write(f"  export {HOST_VARIABLE}={shlex.quote(url)} {TOKEN_VARIABLE}={token}")
            wait_for(stop)
            write("\nStopped.")
    except KeyboardInterrupt:  # a second signal: at once, but what was recorded is still worth showing
        write("\nStopped.")
    except OSError as exc:
        print(f"cms sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    write(summary(sandbox))
    return 0


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
