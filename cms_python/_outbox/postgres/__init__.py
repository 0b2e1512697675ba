"""The PostgreSQL store (`PostgresStore`, a `Store`): its SQL (`sql`), its own connections (`link`) and the app's
database handles that `Outbox.within` writes through (`connections`)."""

from .store import PostgresStore

__all__ = ["PostgresStore"]
