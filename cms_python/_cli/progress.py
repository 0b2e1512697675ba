"""What `cms import` shows while it runs: a live bar on a terminal (with tqdm, the cli extra), else a line every
few seconds; both with the counts, the delivery rate and the ETA at the rate limit."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Protocol, TextIO

from .._backfill import ImportSummary, RowProblem
from .._printable import printable

#: Seconds between two progress lines when standard output is not a terminal.
LINE_INTERVAL = 5.0


def duration(events: int, rate_limit: float) -> str:
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


class Display(Protocol):
    def update(self, summary: ImportSummary) -> None: ...

    def close(self) -> None: ...


def display(out: TextIO, name: str, rate_limit: float | None, *, sending: bool) -> Display:
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
        return [problem_line(problem) for problem in new]

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


def problem_line(problem: RowProblem) -> str:
    where = f"line {problem.line}" if problem.line is not None else "(not in the file)"
    what = problem.error if problem.type == "validation_error" else f"{problem.type}: {problem.error}"
    return f"  {where}: {printable(what)}"  # a server's words, or a row's values
