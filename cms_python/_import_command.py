"""`cms import`: backfill past leads and sales from a CSV or JSON Lines file, with a progress bar or lines."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol, TextIO

from ._base import HOST_VARIABLE, TOKEN_VARIABLE
from ._client import CMSClient
from ._import_rows import FORMATS, KINDS, MalformedInputError, format_of
from ._importing import KEPT_PROBLEMS, OUTBOX_SUFFIX, ImportSummary, RowProblem, _refuse_to_overwrite, import_events
from ._printable import printable, quoted
from ._signals import interrupt_on_signals, stop_on_signals

#: Seconds between two progress lines when standard output is not a terminal.
LINE_INTERVAL = 5.0
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


def add_import_command(commands: Any) -> None:
    """Add `cms import` to the `cms` command's subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "import",
        help=_SUMMARY,
        description=_SUMMARY,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(command=_import, parser=parser)
    parser.add_argument("file", metavar="FILE", help="a .csv or .jsonl file, or - for standard input (with --format)")
    parser.add_argument("--kind", choices=KINDS, help="the kind of rows without a kind column value")
    parser.add_argument("--format", choices=FORMATS, help="csv or jsonl (default: from FILE's name)")
    parser.add_argument("--dry-run", action="store_true", help="check every row, send nothing")
    parser.add_argument("--strict", action="store_true", help="send nothing if any row is invalid")
    parser.add_argument("--outbox", metavar="PATH", help=f"the outbox file (default: FILE{OUTBOX_SUFFIX})")
    parser.add_argument(
        "--rate-limit",
        type=_rate,
        default=60.0,
        metavar="N",
        help="requests per minute (default 60, the API's limit; 0 turns pacing off)",
    )
    parser.add_argument("--errors", metavar="FILE", help="write the invalid and failed rows here as CSV")
    parser.add_argument("--token", help=f"API token (default: ${TOKEN_VARIABLE})")
    parser.add_argument("--host", help=f"API base URL (default: ${HOST_VARIABLE}, else https://api.cme.sh)")


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0 <= rate < float("inf"):
        raise argparse.ArgumentTypeError(f"a rate is a number of requests per minute, 0 or more, not {quoted(text)}")
    return rate


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
    client = None if args.dry_run else _client(args)
    rate_limit = args.rate_limit or None
    outbox = args.outbox or args.file + OUTBOX_SUFFIX
    name = "standard input" if stdin else args.file
    display = _display(sys.stdout, name, None if args.dry_run else rate_limit, sending=not args.dry_run)
    try:
        if stdin and args.errors is not None:  # the input is a copy: the file it was copied from is the input
            _refuse_to_overwrite(args.errors, "/dev/stdin", None)
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
                on_progress=display.update,
                stop=stop,
            )
    except MalformedInputError as exc:
        display.close()
        print(f"cms import: {name}, {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # a file that cannot be read or written; an outbox file that is not one
        display.close()
        print(f"cms import: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        display.close()
        print(f"Stopped at once. What was queued stays in {outbox}: run the same command again to resume.")
        return INTERRUPTED
    finally:
        if client is not None:
            client.close()
    display.close()
    return _report(summary, args, outbox, rate_limit)


def _client(args: argparse.Namespace) -> CMSClient:
    parser: argparse.ArgumentParser = args.parser
    token = args.token or os.environ.get(TOKEN_VARIABLE)
    if not token:
        parser.error(f"no API token: pass --token or set {TOKEN_VARIABLE} (or check the file with --dry-run)")
    try:
        return CMSClient(token, args.host)
    except ValueError as exc:
        parser.error(str(exc))


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
            shutil.copyfileobj(sys.stdin.buffer, copy)
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
            print(f"At {rate_limit:g} requests a minute, sending {rows} takes {_duration(valid, rate_limit)}.")
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


def _duration(events: int, rate_limit: float) -> str:
    """How long `events` requests take at `rate_limit` per minute, as 2 h 46 min."""
    return _clock(events * 60 / rate_limit, words=True)


def _clock(seconds: float, *, words: bool = False) -> str:
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    if not words:
        return f"{hours}:{minute:02}:{second:02}"
    if hours:
        return f"about {hours} h {minute} min"
    return f"about {minute} min" if minute else f"{second} s"


class _Display(Protocol):
    def update(self, summary: ImportSummary) -> None: ...

    def close(self) -> None: ...


def _display(out: TextIO, name: str, rate_limit: float | None, *, sending: bool) -> _Display:
    """A live bar on a terminal (when tqdm is installed), else a line every few seconds."""
    if out.isatty():
        try:
            from tqdm import tqdm  # noqa: PLC0415 - the cli extra, and only here: `import cms_python` stays light
        except ImportError:
            pass
        else:
            return _Bar(tqdm, out, name, rate_limit, sending=sending)
    return _Lines(out, name, rate_limit, sending=sending)


class _Progress:
    """What the bar and the lines both show: the counts, the delivery rate and the ETA at the rate limit."""

    def __init__(self, out: TextIO, name: str, rate_limit: float | None, *, sending: bool) -> None:
        self.out = out
        self.name = name
        self.rate_limit = rate_limit
        self.sending = sending
        self.printed = 0
        self.started: float | None = None

    def problems(self, summary: ImportSummary) -> list[str]:
        """The problems not shown yet, as lines."""
        new = summary.problems[self.printed :]
        self.printed = len(summary.problems)
        return [_problem(problem) for problem in new]

    def counts(self, summary: ImportSummary, *, without: tuple[str, ...] = ()) -> str:
        """The counts for `summary`'s state, most telling first (a narrow terminal cuts the end off); `without`:
        the one the bar already shows."""
        rows = f"{summary.rows:,}" if summary.rows is not None else "?"
        checked = f"{summary.checked:,}/{rows} checked"
        if summary.state == "reading":
            parts = {"read": f"{rows} rows read"}
        elif not self.sending or summary.state == "checking":
            parts = {"checked": checked, "invalid": f"{summary.invalid:,} invalid"}
        else:
            parts = {
                "eta": f"ETA {self.eta(summary)}",
                "rate": self.rate(summary),
                "delivered": f"{summary.delivered:,} delivered",
                "failed": f"{summary.failed:,} failed",
                "pending": f"{summary.pending:,} pending",
                "checked": checked,
                "queued": f"{summary.queued:,} queued",
                "duplicates": f"{summary.duplicates:,} already queued",
                "invalid": f"{summary.invalid:,} invalid",
            }
        return " · ".join(text for name, text in parts.items() if name not in without)

    def rate(self, summary: ImportSummary) -> str:
        """Deliveries per minute since queueing began."""
        now = time.monotonic()
        if self.started is None:
            self.started = now
        elapsed = now - self.started
        per_minute = summary.delivered * 60 / elapsed if elapsed > 0 else 0.0
        return f"{per_minute:,.0f}/min" if per_minute >= 100 else f"{per_minute:.1f}/min"

    def eta(self, summary: ImportSummary) -> str:
        """When the pending events and the rows still to read will be delivered: at the rate limit, or without one
        at the rate seen so far."""
        waiting = summary.pending + max((summary.rows or 0) - summary.checked, 0)
        if not waiting:
            return "0:00:00"
        if self.rate_limit is not None:
            return _clock(waiting * 60 / self.rate_limit)
        elapsed = time.monotonic() - (self.started or time.monotonic())
        if not summary.delivered or elapsed <= 0:
            return "?"
        return _clock(waiting * elapsed / summary.delivered)


class _Bar(_Progress):
    """A tqdm bar over the rows read, then checked, then the events delivered; the counts beside it."""

    def __init__(self, tqdm: Any, out: TextIO, name: str, rate_limit: float | None, *, sending: bool) -> None:
        super().__init__(out, name, rate_limit, sending=sending)
        self.tqdm = tqdm
        self.bar: Any = None

    def update(self, summary: ImportSummary) -> None:
        for line in self.problems(summary):
            self.tqdm.write(line, file=self.out)
        delivering = self.sending and summary.state not in ("reading", "checking", "queueing")
        shown: tuple[str, ...]
        if summary.state == "reading":
            done, total, unit, shown = summary.rows or 0, None, "rows read", ("read",)
        elif delivering and summary.delivered + summary.pending:
            total = summary.delivered + summary.pending
            done, unit, shown = summary.delivered, "delivered", ("delivered", "pending")
        else:
            done, total, unit, shown = summary.checked, summary.rows, "rows checked", ("checked",)
        # Zero counts of what is unusual (repeated rows, invalid ones) would only crowd the line.
        hidden = shown + tuple(name for name in ("duplicates", "invalid") if not getattr(summary, name))
        counts = self.counts(summary, without=hidden)
        if self.bar is None:
            self.bar = self.tqdm(
                file=self.out,
                dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit}{postfix}",
                total=total,
                initial=done,
                desc=summary.state,
                unit=unit,
                postfix=counts,
            )
            return
        self.bar.n, self.bar.total, self.bar.unit = done, total, unit
        self.bar.set_description_str(summary.state, refresh=False)
        self.bar.set_postfix_str(counts, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Lines(_Progress):
    """A line every few seconds, and at each change of state, for logs and pipes."""

    def __init__(self, out: TextIO, name: str, rate_limit: float | None, *, sending: bool) -> None:
        super().__init__(out, name, rate_limit, sending=sending)
        self.state = ""
        self.last = 0.0

    def update(self, summary: ImportSummary) -> None:
        for line in self.problems(summary):
            print(line, file=self.out)
        now = time.monotonic()
        if summary.state != self.state or now - self.last >= LINE_INTERVAL:
            self.state, self.last = summary.state, now
            stamp = datetime.now().strftime("%H:%M:%S")
            print(f"[{stamp}] {self.name}: {summary.state}: {self.counts(summary)}", file=self.out, flush=True)

    def close(self) -> None:
        self.out.flush()


def _problem(problem: RowProblem) -> str:
    where = f"line {problem.line}" if problem.line is not None else "(not in the file)"
    what = problem.error if problem.type == "validation_error" else f"{problem.type}: {problem.error}"
    return f"  {where}: {printable(what)}"  # a server's words, or a row's values
