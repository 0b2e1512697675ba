"""The `cms` command (also `python -m cms_python`): a module per command (track-lead and track-sale, import, sandbox,
demo, outbox), each registered the one way `arguments.add_command` does, with the output, options and signal
handling they share."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from .._base import TOKEN_VARIABLE
from .._version import __version__
from . import backfill, demo, outbox, sandbox, track

__all__ = ["main"]

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
    for command in (track, backfill, sandbox, demo, outbox):
        command.register(commands)
    return parser
