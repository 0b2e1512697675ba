"""`cms import`: backfill past leads and sales from a CSV or JSON Lines file, with a progress bar or lines
(`progress`)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._backfill import ImportSummary, MalformedInputError, import_events
from .._backfill.errors import refuse_to_overwrite
from .._backfill.rows import FORMATS, KINDS, format_of
from .._backfill.run import KEPT_PROBLEMS, OUTBOX_SUFFIX
from .._base import HOST_VARIABLE, TOKEN_VARIABLE
from .arguments import add_command, add_connection_options, client_from, rate
from .progress import display, duration
from .signals import copy_to_end, interrupt_on_signals, stop_on_signals

#: The exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130

_SUMMARY = "Backfill past leads and sales from a CSV or JSON Lines file: checked, paced, resumable."
_EPILOG = f"""\
FILE has a header row naming track_lead/track_sale's keyword arguments (customer_external_id) or the API's
fields (customerExternalId), plus an optional kind column (lead or sale; else --kind). Amounts are integer
cents, timestamps ISO 8601 with an offset (2024-05-01T12:00:00+02:00). JSON Lines (.jsonl): one object per line.

Every row is checked as track_lead/track_sale check their arguments; bad rows are reported (line numbers as an
editor shows them) and skipped, or with --strict nothing is sent. Valid rows are queued in a durable outbox
(FILE{OUTBOX_SUFFIX}, or --outbox) and delivered at --rate-limit requests per minute. Each row's idempotency key
comes from its content: after Ctrl-C, a kill or a reboot, run the same command again to resume; nothing is
queued twice.

examples:
  cms import orders.csv --kind sale --dry-run        # check only
  cms import orders.csv --kind sale --errors bad-rows.csv
  cms import events.jsonl                            # a kind field in each object
  psql -c "..." --csv | cms import - --format csv --kind lead --outbox leads.cms-outbox

The token comes from --token or {TOKEN_VARIABLE}; the host from --host or {HOST_VARIABLE}, else https://api.cme.sh.
Exit status: 0 every valid row delivered (or, with --dry-run, no bad row), 1 some rows failed or were
invalid with --strict / --dry-run, 2 bad usage or a malformed file, {INTERRUPTED} interrupted.
"""


def register(commands: Any) -> None:
    """Add `cms import`."""
    parser = add_command(commands, "import", _SUMMARY, _EPILOG, _import)
    parser.add_argument("file", metavar="FILE", help="a .csv or .jsonl file, or - for standard input (with --format)")
    parser.add_argument("--kind", choices=KINDS, help="the kind of rows without a kind column value")
    parser.add_argument("--format", choices=FORMATS, help="csv or jsonl (default: from FILE's name)")
    parser.add_argument("--dry-run", action="store_true", help="check every row, send nothing")
    parser.add_argument("--strict", action="store_true", help="send nothing if any row is invalid")
    parser.add_argument("--outbox", metavar="PATH", help=f"the outbox file (default: FILE{OUTBOX_SUFFIX})")
    parser.add_argument(
        "--rate-limit",
        type=rate,
        default=60.0,
        metavar="N",
        help="requests per minute (default 60, the API's limit; 0 turns pacing off)",
    )
    parser.add_argument("--errors", metavar="FILE", help="write the invalid and failed rows here as CSV")
    add_connection_options(parser)


def _import(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    stdin = args.file == "-"
    if stdin and args.format is None:
        parser.error("reading standard input (-) needs --format csv or --format jsonl")
    if stdin and args.outbox is None and not args.dry_run:
        parser.error("reading standard input (-) needs --outbox PATH: where the queue is kept to resume from")
    if not stdin:
        if not os.path.isfile(args.file):
            parser.error(f"no such file: {args.file}")
        try:
            format_of(args.file, args.format)
        except ValueError as exc:
            parser.error(f"{exc} (--format)")
    client = None if args.dry_run else client_from(args, hint=" (or check the file with --dry-run)")
    rate_limit = args.rate_limit or None
    outbox = args.outbox or args.file + OUTBOX_SUFFIX
    name = "standard input" if stdin else args.file
    shown = display(sys.stdout, name, None if args.dry_run else rate_limit, sending=not args.dry_run)
    try:
        if stdin and args.errors is not None:  # the input is a copy: the file it was copied from is the input
            refuse_to_overwrite(args.errors, "/dev/stdin", None)
        with _spooled(args.file) as path, stop_on_signals() as stop:
            summary = import_events(
                path,
                # A dry run opens no outbox; the one given is still a file --errors must not overwrite.
                args.outbox if args.dry_run else outbox,
                kind=args.kind,
                format=args.format,
                client=client,
                rate_limit=rate_limit,
                strict=args.strict,
                dry_run=args.dry_run,
                errors=args.errors,
                on_progress=shown.update,
                stop=stop,
            )
    except MalformedInputError as exc:
        shown.close()
        print(f"cms import: {name}, {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # a file that cannot be read or written; an outbox file that is not one
        shown.close()
        print(f"cms import: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        shown.close()
        print(f"Stopped at once. What was queued stays in {outbox}: run the same command again to resume.")
        return INTERRUPTED
    finally:
        if client is not None:
            client.close()
    shown.close()
    return _report(summary, args, outbox, rate_limit)


@contextmanager
def _spooled(file: str) -> Iterator[str]:
    """`file`, or for `-` a temporary copy of standard input: the rows are read more than once."""
    if file != "-":
        yield file
        return
    with tempfile.TemporaryDirectory(prefix="cms-import-") as folder:
        path = os.path.join(folder, "stdin")
        # Nothing is queued yet, and the input may never come: a signal stops the copy at once.
        with interrupt_on_signals(), open(path, "wb") as copy:
            copy_to_end(sys.stdin.buffer, copy)
        yield path


def _report(summary: ImportSummary, args: argparse.Namespace, outbox: str, rate_limit: float | None) -> int:  # noqa: PLR0911
    print(_counts(summary, dry_run=args.dry_run))
    if summary.invalid > KEPT_PROBLEMS:
        where = f"all of them are in {args.errors}" if args.errors else "--errors FILE lists them all"
        print(f"  ... and {summary.invalid - KEPT_PROBLEMS:,} more invalid rows ({where})")
    if args.dry_run:
        if summary.state == "interrupted":
            return INTERRUPTED
        valid = summary.checked - summary.invalid
        if rate_limit is not None and valid:
            rows = f"{valid:,} row" + ("s" if valid > 1 else "")
            print(f"At {rate_limit:g} requests a minute, sending {rows} takes {duration(valid, rate_limit)}.")
        print("Nothing was sent (--dry-run).")
        return 1 if summary.invalid else 0
    if args.strict and summary.invalid and not summary.queued and summary.state == "done":
        print("Nothing was sent (--strict): fix the rows above and run the command again.")
        return 1
    if summary.state == "interrupted":
        waiting = f"{summary.pending:,} queued events wait in {outbox}; nothing queued is lost"
        if not summary.pending and not summary.queued + summary.duplicates:
            waiting = "Nothing was queued"
        print(
            f"Interrupted. {waiting}.\nTo resume, run the same command again: rows already queued are not queued twice."
        )
        return INTERRUPTED
    if summary.state in ("paused", "stopped"):
        print(f"Stopped: {summary.error}. {summary.pending:,} queued events wait in {outbox}.")
        print("Fix the cause and run the same command again to resume.")
        return 1
    if summary.failed:
        print(
            f"{summary.failed:,} events failed (the API refused them): see `cms outbox {outbox} --failed`"
            + (f" or {args.errors}" if args.errors else "")
            + f"; `cms outbox {outbox} --retry-failed` sends them again."
        )
        return 1
    return 0


def _counts(summary: ImportSummary, *, dry_run: bool) -> str:
    rows = summary.rows if summary.rows is not None else summary.checked
    if dry_run:
        return f"Checked {summary.checked:,} of {rows:,} rows: {summary.invalid:,} invalid."
    return (
        f"{rows:,} rows: {summary.queued:,} queued, {summary.duplicates:,} already queued by an earlier run "
        f"(or repeated), {summary.invalid:,} invalid (skipped). {summary.delivered:,} delivered, "
        f"{summary.failed:,} failed, {summary.pending:,} pending."
    )
