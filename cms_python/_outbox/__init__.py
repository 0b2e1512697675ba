"""The outbox wing: `Outbox` (the face), its delivery thread, the `Store` protocol and the two stores that keep its
events (an SQLite file, a PostgreSQL database), and `Within`, which writes events in the app's own transaction."""

from .delivery import FailedEvent
from .outbox import Outbox, OutboxResult, Within
from .store import StorageError

__all__ = ["FailedEvent", "Outbox", "OutboxResult", "StorageError", "Within"]
