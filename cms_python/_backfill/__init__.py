"""The backfill wing: `import_events` (what `cms import` runs) reads rows (`rows`), makes each a `track_*` call with
its idempotency key (`values`), queues them in an outbox and waits for delivery (`run`), and reports (`summary`,
`errors`)."""

from .rows import MalformedInputError
from .run import import_events
from .summary import ImportSummary, RowProblem

__all__ = ["ImportSummary", "MalformedInputError", "RowProblem", "import_events"]
