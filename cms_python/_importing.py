"""`import_events`: check rows of past leads and sales, queue them in a durable `Outbox`, wait for delivery.

Every row goes through `track_lead` / `track_sale`'s own checks (`_requests`); its idempotency key is derived from
its content, so importing the same rows again queues nothing twice (the outbox answers "duplicate").
"""

from __future__ import annotations

import csv
import errno
import os
import re
import secrets
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ._canonical import canonical_json, content_hash
from ._formats import parse_timestamp
from ._import_rows import (
    FIELDS,
    KINDS,
    REQUIRED,
    Format,
    Kind,
    MalformedInputError,
    Row,
    format_of,
    read_file,
    read_mappings,
)
from ._operations import TrackRequest
from ._outbox.store import StorageError
from ._printable import quoted
from ._requests import build_lead, build_sale
from ._types import TrackError

if TYPE_CHECKING:
    from ._client import CMSClient
    from ._outbox import Outbox, OutboxResult

__all__ = ["ImportSummary", "MalformedInputError", "RowProblem", "import_events"]

#: A row ready to queue: its kind and `track_*` keyword arguments; or its problems by field.
Prepared: TypeAlias = "tuple[Kind, dict[str, Any]] | dict[str, str]"
State: TypeAlias = Literal["reading", "checking", "queueing", "delivering", "done", "interrupted", "paused", "stopped"]
#: How many problems a summary keeps (all of them go to the `errors` file).
KEPT_PROBLEMS = 50
#: Rows queued per outbox transaction: one commit for many rows, a short wait for the delivery thread.
BATCH = 256
#: How often `on_progress` is called, in seconds.
PROGRESS_INTERVAL = 0.25
OUTBOX_SUFFIX = ".cms-outbox"
KEY_PREFIX = "import-"
#: The files an outbox is kept in: SQLite's database, and beside it the write-ahead log that holds the latest
#: commits until a checkpoint (and the shared-memory index, and a rollback journal).
_OUTBOX_FILES = ("", "-wal", "-shm", "-journal")
# An outbox named by a URL (a database server's) or kept in memory is in no file.
_NOT_A_FILE = re.compile(r":memory:$|[A-Za-z][A-Za-z0-9+.-]*://")

_FIELD_SETS = {kind: frozenset(FIELDS[kind]) for kind in KINDS}
_REQUIRED_SETS = {kind: frozenset(REQUIRED[kind]) for kind in KINDS}
_BUILD: dict[Kind, Callable[..., TrackRequest[Any] | TrackError]] = {"lead": build_lead, "sale": build_sale}
_DIGITS = frozenset("0123456789")
_MOST_DIGITS = 1000


@dataclass(frozen=True)
class RowProblem:
    """A row that is not delivered: invalid (`type` "validation_error": never sent), or refused when delivered
    (`type` as in its result dict). `line`: where the row starts (None for a failed event not found in the input).
    `error`: what is wrong, per field for invalid rows ("amount: must be ...; currency: ...")."""

    line: int | None
    type: str
    error: str


@dataclass(frozen=True)
class ImportSummary:
    """Where an import stands: what `import_events` returns, and what `on_progress` receives on the way.

    `state`: "reading" (the shape of the input), "checking" (every row, for `strict` or `dry_run`), "queueing",
    "delivering", then "done", "interrupted" (`stop` was set), "paused" (the API refused the token: 401/403) or
    "stopped" (the outbox could not store a row: `error` says why). `rows`: the input's data rows (while
    "reading", those read so far; None while unknown).
    `queued`: rows this run added to the outbox; `duplicates`: rows the outbox already had (queued by an earlier
    run, or repeated in the input); `invalid`: rows skipped (or, with `strict`/`dry_run`, found) invalid.
    `delivered`: events delivered while this run waited; `failed` and `pending`: the outbox's failed and
    undelivered events (an outbox of its own per input makes these the input's). `problems`: the first 50 invalid
    or failed rows.
    """

    state: State
    rows: int | None
    checked: int
    queued: int
    duplicates: int
    invalid: int
    delivered: int
    failed: int
    pending: int
    problems: tuple[RowProblem, ...]
    error: str | None = None


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
        outbox: an `Outbox` to queue in (left open), or the path of one to open and close (default: the input's
            path plus `.cms-outbox`; required for mappings), once the input was read through (and with `strict`,
            found valid).
        kind: the kind of rows that do not say (no `kind` column or an empty one).
        format: "csv" or "jsonl"; by default the file name's suffix (.csv, .jsonl, .ndjson) says.
        client, rate_limit: for an outbox opened from a path: the `CMSClient` to deliver through (default: one
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
        raise ValueError("client= is for an outbox opened from a path: an Outbox delivers through its own client")
    default_outbox = None if input_.path is None else os.fspath(input_.path) + OUTBOX_SUFFIX
    if outbox is None and not dry_run:
        if default_outbox is None:
            raise ValueError("pass outbox= (an Outbox or a path) to import rows that are not a file")
        outbox = default_outbox
    if errors is not None:
        _refuse_to_overwrite(errors, input_.path, default_outbox if outbox is None else outbox)
    run = _Run(input_, kind, on_progress, stop or threading.Event())
    with ExitStack() as cleanup:  # told whether the run raised: the errors file is kept only if it did not
        if errors is not None:
            run.errors = cleanup.enter_context(_ErrorsFile(errors))
        # The shape of the whole input first (and its row count, for progress): a malformed line found halfway
        # must not leave half of the input queued.
        if input_.rereadable and run.count_rows() is None:
            return run.finish("interrupted")
        if dry_run:
            return run.finish("done" if run.check() else "interrupted")
        assert outbox is not None
        return run.send(outbox, client, rate_limit, strict=strict, cleanup=cleanup)


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


class _Run:
    """One call of `import_events`: its counters, and the passes over the input."""

    def __init__(
        self,
        input_: _Input,
        kind: Kind | None,
        on_progress: Callable[[ImportSummary], None] | None,
        stop: threading.Event,
    ) -> None:
        self.input = input_
        self.kind = kind
        self.on_progress = on_progress
        self.stop = stop
        self.errors: _ErrorsFile | None = None
        self.outbox: Outbox | None = None
        self.state: State = "reading"
        self.rows: int | None = None
        self.checked = self.queued = self.duplicates = self.invalid = 0
        self.delivered = self.failed = self.pending = 0
        self.delivered_before = 0
        self.problems: list[RowProblem] = []
        self.error: str | None = None
        self.last_progress = 0.0

    # -- the passes --------------------------------------------------------------------------------------------

    def check(self) -> bool:
        """Check every row (dry run, or before a strict import); False if stopped before the end."""
        self.enter("checking")
        for line, values, text in self.input.rows():
            if self.stop.is_set():
                return False
            prepared = self.prepare(values, text)
            if isinstance(prepared, dict):
                self.reject(line, prepared)
            else:
                result = _BUILD[prepared[0]](**prepared[1])
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
        *,
        strict: bool,
        cleanup: ExitStack,
    ) -> ImportSummary:
        if strict:
            if not self.check():
                return self.finish("interrupted")
            if self.invalid:
                return self.finish("done")
        self.outbox = self.open(outbox, client, rate_limit, cleanup)
        stats = self.outbox.stats()
        self.delivered_before, self.failed, self.pending = stats["delivered"], stats["failed"], stats["pending"]
        self.enter("queueing")
        if not self.queue_rows():
            return self.finish(self.state)
        self.enter("delivering")
        self.deliver()
        if self.state == "delivering":
            self.state = "done"
        self.refresh()
        if self.errors is not None and self.failed:
            self.errors.write_failed(self.outbox, self.lines_of if self.input.rereadable else None)
        return self.finish(self.state)

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

    def open(
        self,
        outbox: Outbox | str | os.PathLike[str],
        client: CMSClient | None,
        rate_limit: float | None,
        cleanup: ExitStack,
    ) -> Outbox:
        from ._outbox import Outbox  # noqa: PLC0415 - the outbox (and its thread) only when sending

        if isinstance(outbox, Outbox):
            return outbox
        opened = Outbox(outbox, client=client, rate_limit=rate_limit)
        # After an interruption, what is left stays in the file for the next run: do not wait for it here.
        cleanup.callback(lambda: opened.close(timeout=0 if self.state != "done" else None))
        return opened

    def queue_rows(self) -> bool:
        """Queue every valid row, `BATCH` rows a transaction; False when stopped before the end (`state` says why)."""
        assert self.outbox is not None
        enqueue: dict[Kind, Callable[..., OutboxResult]] = {
            "lead": self.outbox.track_lead,
            "sale": self.outbox.track_sale,
        }
        rows = self.input.rows()
        waiting: deque[tuple[int, Prepared]] = deque()
        checked = 0
        while not self.stop.is_set():
            if not waiting:
                # Read and checked outside the transaction: delivery waits while one is open.
                waiting.extend((line, keyed(self.prepare(values, text))) for line, values, text in islice(rows, BATCH))
                if not waiting:
                    if self.rows is None:
                        self.rows = checked
                    return True
            done: list[tuple[int, Prepared, OutboxResult | None]] = []
            try:
                with self.outbox._batch():
                    while waiting:
                        line, prepared = waiting[0]
                        result = None if isinstance(prepared, dict) else enqueue[prepared[0]](**prepared[1])
                        if result is not None and not result["success"] and result["type"] == "outbox_full":
                            break  # retried once deliveries made room
                        done.append((*waiting.popleft(), result))
                        if result is not None and not result["success"] and result["type"] == "storage_error":
                            break
            except StorageError as exc:  # the commit failed: none of the batch is stored
                self.state, self.error = "stopped", f"The rows could not be stored in the outbox: {exc}"
                return False
            for line, prepared, result in done:
                if isinstance(prepared, dict):
                    self.reject(line, prepared)
                elif result is not None and not self.settle(line, result):
                    return False
            checked += len(done)
            self.checked = max(self.checked, checked)
            self.tick(force=bool(waiting))
            if waiting:  # the outbox is full (max_pending): deliveries make room
                self.stop.wait(1.0)
        self.state = "interrupted"
        return False

    def settle(self, line: int, result: OutboxResult) -> bool:
        """Count the outbox's answer for a row; False if queueing must stop."""
        if result["success"]:
            if result["data"]["duplicate"]:
                self.duplicates += 1
            else:
                self.queued += 1
        elif result["type"] == "storage_error":
            self.state, self.error = "stopped", result["error"]
            return False
        else:
            self.reject(line, result["details"] or {}, result)
        return True

    def deliver(self) -> None:
        assert self.outbox is not None
        while not self.outbox.flush(timeout=PROGRESS_INTERVAL):
            if self.stop.is_set():
                self.state = "interrupted"
                return
            if self.outbox.stats()["paused"]:
                self.state = "paused"
                self.error = "the API refused the token (401/403): delivery is paused"
                return
            self.tick(force=True)

    def lines_of(self, keys: set[str]) -> dict[str, int]:
        """The line of each row whose idempotency key is in `keys` (the input read again)."""
        lines: dict[str, int] = {}
        for line, values, text in self.input.rows():
            prepared = keyed(self.prepare(values, text))
            if not isinstance(prepared, dict) and prepared[1]["idempotency_key"] in keys:
                lines.setdefault(prepared[1]["idempotency_key"], line)
        return lines

    # -- one row -----------------------------------------------------------------------------------------------

    def prepare(self, values: dict[str, Any], text: bool) -> Prepared:
        """The row's kind and `track_*` keyword arguments, or its problems by field."""
        row_kind = values.pop("kind", self.kind)
        if row_kind not in KINDS:
            reason = "is required: no kind column value and no kind for the whole input"
            return {"kind": reason if row_kind is None else f'must be "lead" or "sale", got {quoted(row_kind)}'}
        problems: dict[str, str] = {}
        if text and "amount" in values:
            amount = values["amount"]
            digits = amount.removeprefix("-")
            # Past 4,300 digits int() refuses to convert (sys.get_int_max_str_digits): no amount is that long.
            if digits and len(digits) <= _MOST_DIGITS and _DIGITS.issuperset(digits):
                values["amount"] = int(amount)
            else:
                problems["amount"] = f"must be a whole number of cents (4999 for 49.99), got {quoted(amount)}"
        timestamp = values.get("timestamp")
        if isinstance(timestamp, str):
            parsed = parse_timestamp(timestamp)
            if isinstance(parsed, datetime):
                values["timestamp"] = parsed
            else:
                problems["timestamp"] = parsed
        fields = _FIELD_SETS[row_kind]
        if not problems and values.keys() <= fields and _REQUIRED_SETS[row_kind] <= values.keys():
            return row_kind, values
        for name in values.keys() - fields:
            problems[name] = f"is not a field of a {row_kind}"
        for name in REQUIRED[row_kind]:
            if name not in values:
                problems[name] = "is required"
        # The SDK's own checks on everything else, so the row's report is complete.
        arguments = {name: values.get(name) for name in FIELDS[row_kind] if name in values or name in problems}
        result = _BUILD[row_kind](**arguments)
        found = dict(result["details"] or {}) if isinstance(result, dict) else {}
        return found | problems

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
        """Call `on_progress` if it is time (or `force`), with fresh counts from the outbox."""
        if self.on_progress is None:
            return
        now = time.monotonic()
        if force or now - self.last_progress >= PROGRESS_INTERVAL:
            self.last_progress = now
            self.refresh()
            self.on_progress(self.summary())

    def refresh(self) -> None:
        if self.outbox is not None:
            stats = self.outbox.stats()
            self.delivered = stats["delivered"] - self.delivered_before
            self.failed, self.pending = stats["failed"], stats["pending"]

    def finish(self, state: State) -> ImportSummary:
        self.state = state
        self.refresh()
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


def keyed(prepared: Prepared) -> Prepared:
    """A prepared row with its idempotency key: its own `idempotency_key` column, or one from its content."""
    if not isinstance(prepared, dict) and "idempotency_key" not in prepared[1]:
        prepared[1]["idempotency_key"] = row_key(*prepared)
    return prepared


def row_key(kind: Kind, arguments: Mapping[str, Any]) -> str:
    """The idempotency key of a row: a hash of its kind and the canonical JSON of its fields."""
    return KEY_PREFIX + content_hash(kind, canonical_json(arguments))


def _refuse_to_overwrite(
    errors: str | os.PathLike[str],
    input_path: str | os.PathLike[str] | None,
    outbox: Outbox | str | os.PathLike[str] | None,
) -> None:
    """`ValueError` if the `errors` file is the input or the outbox, however the paths are spelled or linked:
    writing it would destroy them."""
    protected: list[tuple[str, str]] = []
    if input_path is not None:
        protected.append(("the input file", os.fspath(input_path)))
    if outbox is not None:
        path = os.fspath(outbox if isinstance(outbox, str | os.PathLike) else outbox._label)
        if not _NOT_A_FILE.match(path):
            # SQLite keeps the -wal and -shm of a database opened through a symbolic link beside its target.
            real = os.path.realpath(path)
            protected += [("the outbox", name + suffix) for name in (path, real) for suffix in _OUTBOX_FILES]
    for what, path in protected:
        if _same_file(errors, path):
            raise ValueError(
                f"the errors file {os.fspath(errors)!r} is {what}: writing the errors would destroy it; "
                "name another file"
            )


def _same_file(path: str | os.PathLike[str], other: str) -> bool:
    """Whether two paths name one file: the same device and inode (hard and symbolic links) when both exist,
    else the same path once links, `.` and `..` are resolved."""
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(path) == os.path.realpath(other)


class _ErrorsFile:
    """The `errors` CSV: one line per invalid or failed row (`line`, `type`, `error`).

    Written to a temporary file beside it, renamed over it when the run ends: a run that raises (a malformed
    line, Ctrl-C twice) or is killed never leaves it half-written; the previous one stays. A stream (a pipe, a
    terminal, `/dev/stderr` even when standard error goes to a file) is written to as the run goes.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.temporary: str | None = None
        self.target = ""
        try:
            found: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            found = None
        if found is not None and (not stat.S_ISREG(found.st_mode) or _is_standard_output(found)):
            # Appended to: a log that standard error goes to keeps what it holds.
            self.file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed by __exit__
        else:
            if found is not None and not os.access(path, os.W_OK):  # a rename would replace it all the same
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            # Through a symbolic link: the file it points to is replaced, the link kept.
            self.target = os.path.realpath(path)
            folder, name = os.path.split(self.target)
            self.temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
            try:  # mode 0o666 less the umask, as open() creates a file; an existing file's own mode is kept
                descriptor = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except OSError as exc:  # said of the file asked for, not of the temporary one
                raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
            if found is not None:
                os.fchmod(descriptor, stat.S_IMODE(found.st_mode))
            self.file = open(descriptor, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by __exit__
        self.writer = csv.writer(self.file)
        self.writer.writerow(["line", "type", "error"])

    def __enter__(self) -> _ErrorsFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if self.temporary is None:
            self.file.close()
            return
        try:
            if exc_type is None:
                self.file.flush()
                os.fsync(self.file.fileno())  # on disk before the rename: no empty file after a power cut
            self.file.close()
            if exc_type is None:
                os.replace(self.temporary, self.target)
        finally:
            if os.path.lexists(self.temporary):
                os.unlink(self.temporary)

    def write(self, problem: RowProblem) -> None:
        self.writer.writerow(["" if problem.line is None else problem.line, problem.type, problem.error])

    def write_failed(self, outbox: Outbox, lines_of: Callable[[set[str]], dict[str, int]] | None) -> None:
        failed = outbox.failed()
        lines = lines_of({event.idempotency_key for event in failed}) if lines_of is not None else {}
        for event in failed:
            result = event.result
            self.write(RowProblem(lines.get(event.idempotency_key), result["type"], result["error"]))


def _is_standard_output(found: os.stat_result) -> bool:
    """Whether `found` is the file standard output or error goes to (`--errors /dev/stderr 2>>import.log`): a
    stream to add to, not a file to replace."""
    for descriptor in (1, 2):
        try:
            stream = os.fstat(descriptor)
        except OSError:  # closed
            continue
        if (stream.st_dev, stream.st_ino) == (found.st_dev, found.st_ino):
            return True
    return False
