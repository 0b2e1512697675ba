"""The `cms` command (also `python -m cms_python`): track events from a shell, run the sandbox, see the demo."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ._base import HOST_VARIABLE, TOKEN_VARIABLE
from ._client import CMSClient
from ._formats import parse_timestamp
from ._import_command import add_import_command
from ._outbox_cli import add_command as add_outbox_command
from ._output import strict_json, write
from ._signals import stop_on_signals
from ._types import TrackResult
from ._version import __version__
from .testing import Sandbox
from .testing._summary import summary

_DESCRIPTION = """\
CutMeShort conversion tracking from the command line: track a lead or a sale, run a local sandbox of the
API, or watch the documented journey (deferred attribution, sales, retries) in a demo that needs no token.
"""
_EPILOG = f"""\
examples:
  export {TOKEN_VARIABLE}=your_jwt_token
  cms track-lead --click-id id_123 --event-name signup_started --customer-external-id user_42
  cms track-sale --click-id id_123 --event-name purchase_completed --customer-external-id user_42 \\
      --invoice-id inv_987 --amount 4999 --currency USD
  cms import orders.csv --kind sale
  cms sandbox --port 8787
  cms demo

Run 'cms COMMAND --help' for a command's options.
"""
_CONNECTION_EPILOG = f"""\
The token comes from --token or {TOKEN_VARIABLE} (prefer the variable: command lines are visible to other
users); the host from --host or {HOST_VARIABLE}, else https://api.cme.sh. The result dict is printed as JSON.
Exit status: 0 tracked, 1 not tracked (the result says why), 2 bad usage (e.g. no token).
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run `cms` with `argv` (default: `sys.argv[1:]`); returns the exit status.

    argparse's own exits (`--help`, usage errors: status 2) raise `SystemExit`.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cms", description=_DESCRIPTION, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"cms-python-client {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    lead = _command(
        commands,
        "track-lead",
        "Track a lead event (a signup, a verified email, ...).",
        """\
examples:
  cms track-lead --click-id id_123 --event-name signup_started --customer-external-id user_42
  # deferred attribution: the first call stores the click for the customer...
  cms track-lead --click-id id_123 --event-name lead_captured --customer-external-id user_42 --mode deferred
  # ...later calls leave the click id out
  cms track-lead --event-name kyc_completed --customer-external-id user_42

"""
        + _CONNECTION_EPILOG,
        _track_lead,
    )
    lead.add_argument("--event-name", required=True, help="e.g. signup_started")
    lead.add_argument("--customer-external-id", required=True, help="your stable id for the customer")
    lead.add_argument(
        "--click-id", help="the click to attribute the lead to; leave it out after a deferred lead for the customer"
    )
    lead.add_argument("--mode", choices=["deferred"], help="store the click-to-customer association for later events")
    _customer_arguments(lead)

    sale = _command(
        commands,
        "track-sale",
        "Track a sale (amount in cents).",
        """\
examples:
  cms track-sale --click-id id_123 --event-name purchase_completed --customer-external-id user_42 \\
      --invoice-id inv_987 --amount 4999 --currency USD
  # after a deferred lead, the click id can be left out
  cms track-sale --event-name purchase_completed --customer-external-id user_42 \\
      --invoice-id inv_988 --amount 1999 --currency EUR

"""
        + _CONNECTION_EPILOG,
        _track_sale,
    )
    sale.add_argument("--event-name", required=True, help="e.g. purchase_completed")
    sale.add_argument("--customer-external-id", required=True, help="your stable id for the customer")
    sale.add_argument("--invoice-id", required=True, help="your invoice id: each invoice is recorded once")
    sale.add_argument("--amount", required=True, type=int, help="in cents, e.g. 4999 for 49.99")
    sale.add_argument("--currency", required=True, help="3-letter ISO 4217 code, e.g. USD")
    sale.add_argument(
        "--click-id", help="the click to attribute the sale to; optional after a deferred lead for the customer"
    )
    _customer_arguments(sale)
    add_import_command(commands)

    sandbox = _command(
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
    sandbox.add_argument(
        "--port", type=_port, default=8787, help="port to listen on; 0 picks a free one (default 8787)"
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; ::1 for IPv6)")
    sandbox.add_argument("--token", help="accept only this bearer token (default: any non-empty token)")
    sandbox.add_argument(
        "--rate-limit", type=int, metavar="N", help="allow N requests per minute per token (429 past it)"
    )
    sandbox.add_argument("--quiet", action="store_true", help="do not log each request to stderr")

    _command(
        commands,
        "demo",
        "Walk through the documented journey against an in-process sandbox (no token, no network).",
        """\
It tracks a standard lead, a deferred lead and a follow-up event without click id, a sale attributed through
the deferred association, a sale with a click id, a retried sale that is recorded once, and a lead that breaks
the deferred rule; then prints what the sandbox recorded and which click each event was attributed to.

example:
  cms demo
""",
        _demo,
    )
    add_outbox_command(commands, _command)
    return parser


def _command(
    commands: Any,
    name: str,
    summary: str,
    epilog: str,
    run: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(command=run, parser=parser)
    return parser


def _customer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customer-name")
    parser.add_argument("--customer-email")
    parser.add_argument("--customer-avatar", help="an http(s) URL")
    parser.add_argument(
        "--timestamp", type=_timestamp, help="when it happened, ISO 8601 with a UTC offset: 2024-05-01T12:00:00+02:00"
    )
    parser.add_argument("--idempotency-key", help="sent as Idempotency-Key (default: a fresh UUID)")
    parser.add_argument("--token", help=f"API token (default: ${TOKEN_VARIABLE})")
    parser.add_argument("--host", help=f"API base URL (default: ${HOST_VARIABLE}, else https://api.cme.sh)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt (default 10)")
    parser.add_argument("--max-retries", type=int, default=2, help="retries when safe (default 2)")


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


def _timestamp(text: str) -> datetime:
    parsed = parse_timestamp(text)
    if isinstance(parsed, str):
        raise argparse.ArgumentTypeError(parsed)
    return parsed


def _client(args: argparse.Namespace) -> CMSClient:
    parser: argparse.ArgumentParser = args.parser
    token = args.token or os.environ.get(TOKEN_VARIABLE)
    if not token:
        parser.error(f"no API token: pass --token or set {TOKEN_VARIABLE}")
    try:
        return CMSClient(token, args.host, timeout=args.timeout, max_retries=args.max_retries)
    except ValueError as exc:
        parser.error(str(exc))


def _customer(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "customer_name": args.customer_name,
        "customer_email": args.customer_email,
        "customer_avatar": args.customer_avatar,
        "timestamp": args.timestamp,
        "idempotency_key": args.idempotency_key,
    }


def _track_lead(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.track_lead(
            event_name=args.event_name,
            customer_external_id=args.customer_external_id,
            click_id=args.click_id,
            mode=args.mode,
            **_customer(args),
        )
    return _report(result)


def _track_sale(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.track_sale(
            event_name=args.event_name,
            customer_external_id=args.customer_external_id,
            invoice_id=args.invoice_id,
            amount=args.amount,
            currency=args.currency,
            click_id=args.click_id,
            **_customer(args),
        )
    return _report(result)


def _report(result: TrackResult) -> int:
    write(strict_json(result))
    return 0 if result["success"] else 1


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
            stop.wait()
            write("\nStopped.")
    except KeyboardInterrupt:  # a second signal: at once, but what was recorded is still worth showing
        write("\nStopped.")
    except OSError as exc:
        print(f"cms sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    _print_summary(sandbox)
    return 0


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


_USER_42 = {"customer_external_id": "user_42"}
_USER_77 = {"customer_external_id": "user_77"}
_FIRST_SALE = {
    "event_name": "purchase_completed",
    **_USER_77,
    "invoice_id": "inv_1001",
    "amount": 4999,
    "currency": "USD",
}
#: The demo's steps: what each shows, the client method, its keyword arguments.
_JOURNEY: list[tuple[str, str, dict[str, Any]]] = [
    (
        "Standard lead: the click id comes with the event",
        "track_lead",
        {"click_id": "click_A", "event_name": "signup_started", **_USER_42},
    ),
    (
        "Deferred lead: store the click for the customer",
        "track_lead",
        {"click_id": "click_B", "event_name": "lead_captured", **_USER_77, "mode": "deferred"},
    ),
    (
        "Follow-up event without click id: resolved through the deferred association",
        "track_lead",
        {"event_name": "email_verified", **_USER_77},
    ),
    ("Sale without click id: attributed to the deferred lead's click", "track_sale", _FIRST_SALE),
    (
        "Sale with a click id",
        "track_sale",
        {"click_id": "click_A", "event_name": "purchase_completed", **_USER_42, "invoice_id": "inv_1002"}
        | {"amount": 1999, "currency": "USD"},
    ),
    ("The first sale sent again, as a retry would: recorded once, answered as a replay", "track_sale", _FIRST_SALE),
    (
        "What not to do: a click id again after a deferred lead (a result dict, not an exception)",
        "track_lead",
        {"click_id": "click_C", "event_name": "kyc_completed", **_USER_77},
    ),
]


def _demo(_: argparse.Namespace) -> int:
    sandbox = Sandbox()
    write("CutMeShort demo: the documented journey, against an in-process sandbox (nothing leaves this process).")
    with sandbox.client() as client:
        for number, (title, method, kwargs) in enumerate(_JOURNEY, 1):
            arguments = ", ".join(f"{name}={json.dumps(value)}" for name, value in kwargs.items())
            write(f"\n{number}. {title}\n   client.{method}({arguments})")
            result = getattr(client, method)(**kwargs)
            write(textwrap.indent(strict_json(result), "   "))
    write("")
    _print_summary(sandbox)
    return 0


def _print_summary(sandbox: Sandbox) -> None:
    write(summary(sandbox))
