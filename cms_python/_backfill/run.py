"""`import_events`: check rows of past leads and sales, queue them in a durable `Outbox`, wait for delivery.

Every row goes through `track_lead` / `track_sale`'s own checks (`_requests`); its idempotency key is derived from
its content, so importing the same rows again queues nothing twice (the outbox answers "duplicate"). A file is
read twice at most: a fast pass that checks its shape and counts its rows (or, with `strict`, one that checks
every row), then the pass that checks and queues.
"""

from __future__ import annotations

import os
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from itertools import islice
from typing import TYPE_CHECKING, Any

from .._operations import TrackRequest
from .._outbox.store import StorageError
from .._printable import quoted
from .._types import TrackError
from .errors import ErrorsFile, refuse_to_overwrite
from .rows import KINDS, Format, Kind, Row, format_of, read_file, read_mappings
from .summary import ImportSummary, RowProblem, State
from .values import BUILD, Prepared, keyed, prepare

if TYPE_CHECKING:
    from .._client import CMSClient
    from .._outbox import Outbox, OutboxResult
    from .._outbox.delivery import Outcome

#: How many problems a summary keeps (all of them go to the `errors` file).
KEPT_PROBLEMS = 50
#: Rows queued per outbox transaction: one commit for many rows, a short wait for the delivery thread.
BATCH = 256
#: How often `on_progress` is called, in seconds.
PROGRESS_INTERVAL = 0.25
OUTBOX_SUFFIX = ".cms-outbox"


def import_events(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    outbox: Outbox | str | os.PathLike[str] | None = None,
    *,
    kind: Kind | None = None,
    format: Format | None = None,
    client: CMSClient | None = None,
    rate_limit: float | None = 60,
    strict: bool = False,
    dry_run: bool = False,
    errors: str | os.PathLike[str] | None = None,
    on_progress: Callable[[ImportSummary], None] | None = None,
    stop: threading.Event | None = None,
) -> ImportSummary:
    """Import past leads and sales: check every row, queue the valid ones in a durable outbox, wait for delivery.

    Args:
        source: a CSV file (a header row) or JSON Lines file (one object per line), or an iterable of mappings.
            Columns (keys) are `track_lead` / `track_sale`'s keyword arguments, snake_case or the API's camelCase,
            plus `kind` ("lead" or "sale"). In files, amounts are integer cents and timestamps ISO 8601 with an
            offset; empty cells and nulls are absent values.
        outbox: an `Outbox` to queue in (left open), or the target of one to open and close (a path or a
            `postgresql://` URL; default: the input's path plus `.cms-outbox`; required for mappings), once the
            input was read through (and with `strict`, found valid).
        kind: the kind of rows that do not say (no `kind` column or an empty one).
        format: "csv" or "jsonl"; by default the file name's suffix (.csv, .jsonl, .ndjson) says.
        client, rate_limit: for an outbox opened from a target: the `CMSClient` to deliver through (default: one
            from `CMS_BEARER_TOKEN` / `CMS_HOST`) and the requests per minute (None: no pacing). An `Outbox` of
            your own has its own.
        strict: check every row first; if any is invalid, queue nothing.
        dry_run: check every row, queue nothing.
        errors: write the invalid and failed rows to this CSV file (`line`, `type`, `error` columns), when the
            run ends (a run that raises leaves the file as it was). Not the input nor the outbox (`ValueError`).
        on_progress: called with the summary so far, a few times a second.
        stop: set it (from a signal handler, another thread) to stop between two rows: what was queued stays
            in the outbox, and importing again resumes (nothing is queued twice).

    Each row's idempotency key is derived from its content (its kind and the canonical JSON of its fields), or is
    its `idempotency_key` column. Returns the final `ImportSummary`. Raises `MalformedInputError` (a
    `ValueError`) for input that cannot be imported as a whole, before anything is queued when the input can be
    read twice (a file, a list); `ValueError` for bad arguments; `OSError` if the file cannot be read.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be 'lead', 'sale' or None, not {quoted(kind)}")
    input_ = _Input(source, kind, format)
    if strict and not input_.rereadable:
        raise ValueError("strict=True reads the rows twice: pass a list or a file, not an iterator")
    if client is not None and outbox is not None and not isinstance(outbox, str | os.PathLike):
        raise ValueError(
            "client= is for an outbox opened from a path or URL: an Outbox delivers through its own client"
        )
    default_outbox = None if input_.path is None else os.fspath(input_.path) + OUTBOX_SUFFIX
    if outbox is None and not dry_run:
        if default_outbox is None:
            raise ValueError("pass outbox= (an Outbox, a path or a URL) to import rows that are not a file")
        outbox = default_outbox
    if errors is not None:
        refuse_to_overwrite(errors, input_.path, default_outbox if outbox is None else outbox)
    run = _Run(input_, on_progress, stop or threading.Event(), errors is not None)
    with ExitStack() as cleanup:  # told whether the run raised: the errors file is kept only if it did not
        if errors is not None:
            run.errors = cleanup.enter_context(ErrorsFile(errors))
        # The shape of the whole input first (and its row count, for progress): a malformed line found halfway
        # must not leave half of the input queued. With `strict`, the pass that checks every row does it.
        if input_.rereadable and not strict and run.count_rows() is None:
            return run.finish("interrupted")
        if dry_run or strict:
            if not run.check():
                return run.finish("interrupted")
            if dry_run or run.invalid:
                return run.finish("done")
        assert outbox is not None
        return run.send(outbox, client, rate_limit, cleanup)


class _Input:
    """Where the rows come from, and whether they can be read more than once."""

    def __init__(
        self,
        source: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
        kind: Kind | None,
        format: Format | None,
    ) -> None:
        self.kind = kind
        self.path: str | os.PathLike[str] | None = None
        self.mappings: Iterable[Mapping[str, Any]] = ()
        if isinstance(source, str | os.PathLike):
            self.path = source
            self.format = format_of(source, format)
            self.rereadable = True
        elif isinstance(source, Iterable) and not isinstance(source, bytes | Mapping):
            self.mappings = source
            self.rereadable = not isinstance(source, Iterator)
        else:
            raise TypeError(f"source must be a path or an iterable of mappings, not {type(source).__name__}")

    def rows(self) -> Iterator[Row]:
        if self.path is not None:
            return read_file(self.path, self.format, self.kind)
        return read_mappings(self.mappings)


class _Lines:
    """The line of each row queued, by idempotency key, for the failed events the `errors` file lists: kept as
    two arrays of numbers (16 bytes a row, a million rows in 16 MB), the key by its hash."""

    def __init__(self) -> None:
        self._hashes = array("q")
        self._lines = array("q")

    def record(self, key: str, line: int) -> None:
        self._hashes.append(hash(key))
        self._lines.append(line)

    def of(self, keys: Iterable[str]) -> dict[str, int]:
        """The first line recorded for each of `keys` (those recorded)."""
        wanted = {hash(key): key for key in keys}
        found: dict[str, int] = {}
        for hashed, line in zip(self._hashes, self._lines, strict=True):
            key = wanted.get(hashed)
            if key is not None:
                found.setdefault(key, line)
        return found


class _Run:
    """One call of `import_events`: its counters, and the passes over the input."""

    def __init__(
        self,
        input_: _Input,
        on_progress: Callable[[ImportSummary], None] | None,
        stop: threading.Event,
        keep_lines: bool,
    ) -> None:
        self.input = input_
        self.on_progress = on_progress
        self.stop = stop
        self.errors: ErrorsFile | None = None
        self.lines = _Lines() if keep_lines else None
        self.outbox: Outbox | None = None
        self.state: State = "reading"
        self.rows: int | None = None
        self.checked = self.queued = self.duplicates = self.invalid = 0
        self.delivered = self.failed = self.pending = 0
        self.problems: list[RowProblem] = []
        self.error: str | None = None
        self.last_progress = 0.0
        #: Told by the outbox's delivery thread of each outcome it records: progress without asking the store.
        self.progress = threading.Condition()

    # -- the passes --------------------------------------------------------------------------------------------

    def count_rows(self) -> int | None:
        """Read the input through, checking its shape only; the number of rows, or None if stopped."""
        self.rows = 0
        self.enter("reading")
        for _ in self.input.rows():
            if self.stop.is_set():
                return None
            self.rows += 1
            self.tick()
        return self.rows

    def check(self) -> bool:
        """Check every row (dry run, or before a strict import); False if stopped before the end."""
        self.enter("checking")
        for line, values, text in self.input.rows():
            if self.stop.is_set():
                return False
            prepared = prepare(values, text, self.input.kind)
            if isinstance(prepared, dict):
                self.reject(line, prepared)
            else:
                result = BUILD[prepared[0]](**prepared[1])
                if isinstance(result, dict):
                    self.reject(line, result["details"] or {})
            self.checked += 1
            self.tick()
        self.rows = self.checked
        return True

    def send(
        self,
        outbox: Outbox | str | os.PathLike[str],
        client: CMSClient | None,
        rate_limit: float | None,
        cleanup: ExitStack,
    ) -> ImportSummary:
        self.outbox = self.open(outbox, client, rate_limit, cleanup)
        self.checked = self.invalid = 0  # counted again as the rows are queued
        self.problems.clear()
        cleanup.callback(self.outbox._listen(self.outcome))
        stats = self.outbox.stats()
        self.failed, self.pending = int(stats["failed"]), int(stats["pending"])
        self.enter("queueing")
        if not self.queue_rows():
            return self.finish(self.state)
        self.enter("delivering")
        self.deliver()
        return self.finish("done" if self.state == "delivering" else self.state)

    def open(
        self,
        outbox: Outbox | str | os.PathLike[str],
        client: CMSClient | None,
        rate_limit: float | None,
        cleanup: ExitStack,
    ) -> Outbox:
        from .._outbox import Outbox  # noqa: PLC0415 - the outbox (and its thread) only when sending

        if isinstance(outbox, Outbox):
            return outbox
        opened = Outbox(outbox, client=client, rate_limit=rate_limit)
        # After an interruption, what is left stays in the store for the next run: do not wait for it here.
        cleanup.callback(lambda: opened.close(timeout=0 if self.state != "done" else None))
        return opened

    def queue_rows(self) -> bool:
        """Queue every valid row, `BATCH` rows a transaction; False when stopped before the end (`state` says why)."""
        assert self.outbox is not None
        rows = self.input.rows()
        # Built requests the outbox had no room for (max_pending): sent again once deliveries made room.
        waiting: list[tuple[int, TrackRequest[Any]]] = []
        while not self.stop.is_set():
            batch = waiting or self.requests(islice(rows, BATCH))
            if not batch:
                if self.rows is None:
                    self.rows = self.checked
                return True
            try:
                results = self.outbox._enqueue_many([request for _, request in batch])
            except StorageError as exc:  # the commit failed: none of the batch is stored
                self.state, self.error = "stopped", f"The rows could not be stored in the outbox: {exc}"
                return False
            waiting = []
            for index, ((line, request), result) in enumerate(zip(batch, results, strict=True)):
                if not result["success"] and result["type"] == "outbox_full":
                    waiting = batch[index:]
                    break
                self.settle(line, request, result)
            self.tick(force=bool(waiting))
            if waiting:  # the outbox is full: deliveries make room
                self.stop.wait(1.0)
        self.state = "interrupted"
        return False

    def requests(self, rows: Iterable[Row]) -> list[tuple[int, TrackRequest[Any]]]:
        """The requests of the valid `rows`, by line; the others rejected (and counted as checked) here."""
        requests = []
        for line, values, text in rows:
            prepared: Prepared = keyed(prepare(values, text, self.input.kind))
            if isinstance(prepared, dict):
                self.checked += 1
                self.reject(line, prepared)
                continue
            request = BUILD[prepared[0]](**prepared[1])
            if isinstance(request, TrackRequest):
                requests.append((line, request))
            else:
                self.checked += 1
                self.reject(line, request["details"] or {})
        return requests

    def settle(self, line: int, request: TrackRequest[Any], result: OutboxResult) -> None:
        """Count the outbox's answer for a row."""
        self.checked += 1
        if not result["success"]:
            self.reject(line, result["details"] or {}, result)
            return
        if result["data"]["duplicate"]:
            self.duplicates += 1
        else:
            self.queued += 1
            self.pending += 1
        if self.lines is not None:
            self.lines.record(request.idempotency_key, line)

    def deliver(self) -> None:
        """Wait until what is pending is delivered (or failed), the import is stopped, or delivery pauses."""
        outbox = self.outbox
        assert outbox is not None
        while True:
            if self.stop.is_set():
                self.state = "interrupted"
                return
            if outbox._paused():
                self.state = "paused"
                self.error = "the API refused the token (401/403): delivery is paused"
                return
            if outbox.flush(timeout=0):
                return
            with self.progress:
                self.progress.wait(PROGRESS_INTERVAL)
            self.tick(force=True)

    def outcome(self, outcome: Outcome) -> None:
        """In the delivery thread: an event of the outbox was delivered, or failed for good."""
        with self.progress:
            self.pending = max(self.pending - 1, 0)
            if outcome == "delivered":
                self.delivered += 1
            else:
                self.failed += 1
            self.progress.notify_all()

    def reject(self, line: int, problems: Mapping[str, str], result: TrackError | None = None) -> None:
        self.invalid += 1
        detail = "; ".join(f"{name}: {reason}" for name, reason in problems.items())
        problem = RowProblem(line, "validation_error", detail or "invalid")
        if result is not None and result["type"] != "validation_error":
            problem = RowProblem(line, result["type"], result["error"])
        if len(self.problems) < KEPT_PROBLEMS:
            self.problems.append(problem)
        if self.errors is not None:
            self.errors.write(problem)

    # -- progress ----------------------------------------------------------------------------------------------

    def enter(self, state: State) -> None:
        """Move on to the next step, and say so."""
        self.state = state
        self.tick(force=True)

    def tick(self, *, force: bool = False) -> None:
        """Call `on_progress` if it is time (or `force`), with the counts as the outbox told them."""
        if self.on_progress is None:
            return
        now = time.monotonic()
        if force or now - self.last_progress >= PROGRESS_INTERVAL:
            self.last_progress = now
            self.on_progress(self.summary())

    def refresh(self) -> None:
        """The counts as the outbox has them (other processes may deliver from it too)."""
        if self.outbox is not None:
            stats = self.outbox.stats()
            self.failed, self.pending = int(stats["failed"]), int(stats["pending"])

    def finish(self, state: State) -> ImportSummary:
        """The end: the final counts, the failed events in the errors file (after a delivery, with their lines)."""
        self.state = state
        self.refresh()
        if self.outbox is not None and self.errors is not None and self.failed and self.lines is not None:
            failed = self.outbox.failed()
            self.errors.write_failed(failed, self.lines.of(event.idempotency_key for event in failed))
        summary = self.summary()
        if self.on_progress is not None:
            self.on_progress(summary)
        return summary

    def summary(self) -> ImportSummary:
        return ImportSummary(
            state=self.state,
            rows=self.rows,
            checked=self.checked,
            queued=self.queued,
            duplicates=self.duplicates,
            invalid=self.invalid,
            delivered=self.delivered,
            failed=self.failed,
            pending=self.pending,
            problems=tuple(self.problems),
            error=self.error,
        )
