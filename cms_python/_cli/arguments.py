"""What the `cms` commands share: how a command is registered, the connection options and the client built from
them, and the types of the options that take a port, a rate or a timestamp."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .._base import HOST_VARIABLE, TOKEN_VARIABLE
from .._client import CMSClient
from .._formats import parse_timestamp
from .._printable import quoted

#: Where a command's token and host come from, for the commands' help.
CONNECTION = f"""\
The token comes from --token or {TOKEN_VARIABLE} (prefer the variable: command lines are visible to other
users); the host from --host or {HOST_VARIABLE}, else https://api.cme.sh."""


def add_command(
    commands: Any, name: str, summary: str, epilog: str, run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """Add the subcommand `name` to `cms` (`commands`: its subparsers), run as `run(args)`."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(command=run, parser=parser)
    return parser


def add_connection_options(parser: argparse.ArgumentParser, *, attempts: bool = False, what: str = "") -> None:
    """--token and --host (`what`: the help's prefix, e.g. "deliver: "); with `attempts`, also --timeout and
    --max-retries (otherwise the client's defaults)."""
    parser.add_argument("--token", help=f"{what}API token (default: ${TOKEN_VARIABLE})")
    parser.add_argument("--host", help=f"{what}API base URL (default: ${HOST_VARIABLE}, else https://api.cme.sh)")
    if attempts:
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt (default 10)")
        parser.add_argument("--max-retries", type=int, default=2, help="retries when safe (default 2)")
    else:
        parser.set_defaults(timeout=10.0, max_retries=2)


def client_from(args: argparse.Namespace, *, hint: str = "") -> CMSClient:
    """The client the connection options describe; a usage error (exit 2) without a token or with a bad host.
    `hint`: what else the user could do without a token."""
    parser: argparse.ArgumentParser = args.parser
    token = args.token or os.environ.get(TOKEN_VARIABLE)
    if not token:
        parser.error(f"no API token: pass --token or set {TOKEN_VARIABLE}{hint}")
    try:
        return CMSClient(token, args.host, timeout=args.timeout, max_retries=args.max_retries)
    except ValueError as exc:
        parser.error(str(exc))


def port(text: str) -> int:
    """A port to listen on: 0 (any free one) to 65535."""
    number = int(text)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {number}")
    return number


def rate(text: str) -> float:
    """Requests per minute: 0 (no pacing) or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"a rate is a number of requests per minute, 0 or more, not {quoted(text)}")
    return value


def timestamp(text: str) -> datetime:
    """An ISO 8601 date-time with a UTC offset."""
    parsed = parse_timestamp(text)
    if isinstance(parsed, str):
        raise argparse.ArgumentTypeError(parsed)
    return parsed
