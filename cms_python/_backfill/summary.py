"""What an import reports: the rows it could not deliver, and where it stands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

State: TypeAlias = Literal["reading", "checking", "queueing", "delivering", "done", "interrupted", "paused", "stopped"]


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
