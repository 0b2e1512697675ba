"""The outbox's PostgreSQL store: a database that every process of every machine with an `Outbox` on it shares.

Tables (prefixed `cms_outbox_`, in the first schema of the connection's search path) are created on first use by
the outbox's own connection, under a transaction-scoped advisory lock, and only when missing: many processes may
start at once, and a schema in place costs no DDL (a `CREATE ... IF NOT EXISTS` locks the table even then).
`cms outbox migrate URL --sql` prints them for teams whose migrations run elsewhere.

`events` holds pending, failed and delivered events (a delivered one without its body, for `DELIVERED_MEMORY`:
its key is then recognised by the same unique index an enqueue checks), each in a `scope` (a hash of the API
token: `token_scope`), so that the events of different accounts sharing a database are delivered with their own
token, each account at its own pace.
An app's transaction only inserts its event (`Within`): nothing it does waits for delivery, or delivery for it.
Delivery then "promotes" committed events (`promoted`): each customer's oldest promoted pending event is its head
(`heads`), the only one of its customer that may be sent, so that a customer's events go one at a time, in the
order their transactions committed (overlapping transactions of one customer: in the order of their ids, which
are handed out before commit, when both committed before the earlier's turn). A claim reads `heads` in `seq`
order, under the scope's `pace` row lock (`FOR UPDATE`), which also serialises promotion, makes outcomes (which
move heads too, under `FOR SHARE`) wait for a promotion under way, and holds every process of the account to one
pace and to a 429's Retry-After. Counts are kept per delivering process (`counts`) and summed, so that counting
stays cheap at millions of rows without a row every transaction would update.

Nothing needs a session held across transactions: no LISTEN (a process's own commits wake its delivery; others
look every second), no session advisory lock, no prepared statement that must survive: it works through PgBouncer
in transaction mode. Times are seconds on the database's clock (`DatabaseClock`), not the machines'.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from ..store import (
    DELIVERED_MEMORY,
    LEASE,
    Claim,
    Full,
    KeyReused,
    NewEvent,
    StorageError,
    StoredEvent,
    is_dead,
    process_owner,
)
from ..targets import label
from . import sql
from .connections import AppConnection, adapt
from .link import Link, connection_settings, scrubber

if TYPE_CHECKING:
    from psycopg.rows import TupleRow

#: Held (transaction-scoped) while creating or migrating the tables: any 64-bit number no app would pick.
_SCHEMA_LOCK = 0x434D535F4F555442  # "CMS_OUTB"
#: Events promoted, and deliveries forgotten, per statement.
PROMOTE_BATCH = 10_000
FORGET_BATCH = 5000
#: How often the delivery thread counts the pending events, for `max_pending`.
PENDING_COUNT_EVERY = 1.0
#: How often the clock is synchronised with the database's, deliveries forgotten, per-process counts folded.
CLOCK_SYNC_EVERY = 60.0
FORGET_EVERY = 3600.0


class DatabaseClock:
    """The database's clock, read through this machine's monotonic clock: every process of the fleet agrees on it
    (to a round trip), and a machine's wall clock stepped back or forward does not move it. Synchronised when the
    store opens and every `CLOCK_SYNC_EVERY` seconds."""

    def __init__(self) -> None:
        self._offset = time.time() - time.monotonic()
        self.synced_at = -CLOCK_SYNC_EVERY

    def sync(self, connection: psycopg.Connection[TupleRow]) -> None:
        before = time.monotonic()
        row = connection.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        after = time.monotonic()
        assert row is not None
        self._offset = float(row[0]) - (before + after) / 2
        self.synced_at = after

    def now(self) -> float:
        return self._offset + time.monotonic()

    def wait(self, wake: threading.Event, seconds: float) -> None:
        if wake.wait(seconds):
            wake.clear()


class PostgresStore:
    """The events of one API token (`scope`; None: every scope, to look and retry only) in a PostgreSQL database:
    a `Store`. Raises `ValueError` for a database whose outbox is newer than this SDK, `OSError` when the database
    cannot be reached or the tables cannot be created (the messages hold no password)."""

    def __init__(self, url: str, *, lease: float = LEASE, scope: str | None) -> None:
        self.label = label(url)
        self.lease = lease
        self.scope = scope
        self.clock = DatabaseClock()
        self._url = url
        self._settings = connection_settings(url)
        self._scrub = scrubber(url, self._settings)
        #: Direct enqueues and what `Outbox` reads; and the delivery thread's own.
        self._front = Link(self._settings, self._scrub)
        self._back = Link(self._settings, self._scrub)
        self.locks = (self._back.lock, self._front.lock)
        #: Whose row of `counts` this store's changes go to: its own, so that no two processes wait on one row.
        self.owner = process_owner()
        self._last_forget = -FORGET_EVERY
        #: For `max_pending`: the pending events as last counted (every second, by the delivery thread), plus
        #: those this process queued since. Counting at each enqueue would cost more than the enqueue.
        self._pending_counted = 0
        self._queued_since = 0
        self._counted_at = -PENDING_COUNT_EVERY
        #: The id of the outbox the tables are (`sql.OUTBOX`): what an enqueue through an app's connection checks.
        self._outbox = ""
        try:
            self._front.run(self._set_up)
            self._back.run(self.clock.sync)
        except StorageError as exc:
            self.close()
            raise OSError(f"Cannot open the outbox {self.label}: {exc}") from None
        except BaseException:
            self.close()
            raise

    def _set_up(self, connection: psycopg.Connection[TupleRow]) -> None:
        """Create the tables if they are missing (once, whoever else starts now); check their version."""
        with _transaction(connection):
            version = _version(connection)
            if version is None:
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                version = _version(connection)  # again: another process may have created them meanwhile
                if version is None:
                    connection.execute(sql.SCHEMA.encode())  # several statements: no parameters
                    version = sql.SCHEMA_VERSION
            if version > sql.SCHEMA_VERSION:
                raise ValueError(
                    f"The outbox in {self.label} was written by a newer cms-python-client (schema version {version}; "
                    f"this one reads up to {sql.SCHEMA_VERSION}). Upgrade cms-python-client to deliver its events."
                )
            if self.scope is not None:
                connection.execute(
                    "INSERT INTO cms_outbox_pace (scope) VALUES (%s) ON CONFLICT DO NOTHING", (self.scope,)
                )
            self._outbox = _outbox_id(connection)

    def _scoped(self) -> str:
        if self.scope is None:
            raise RuntimeError("this store was opened without a token: it can look and retry, not deliver")
        return self.scope

    # -- enqueue ------------------------------------------------------------------------------------------------

    def enqueue(self, event: NewEvent, *, now: float, max_pending: int) -> tuple[str, bool]:
        parameters = self._enqueued(event, now=now)
        return self._front.run(lambda connection: self._insert(_Own(connection), parameters, max_pending))

    def through(self, connection: object) -> _Through:
        return _Through(self, adapt(connection))

    def _insert(self, connection: AppConnection, parameters: dict[str, Any], max_pending: int) -> tuple[str, bool]:
        """Insert an event (one statement); else say why not: the same event (duplicate), another one under its
        key (`KeyReused`), or a full outbox (`Full`)."""
        if self._pending_counted + self._queued_since < max_pending:
            inserted = connection.rows(sql.ENQUEUE, parameters)
            if inserted:
                self._queued_since += 1
                return str(inserted[0][0]), False
        if not connection.rows(sql.OURS, parameters)[0][0]:
            current = self._front.run(_outbox_id)
            if current == parameters["outbox"]:
                raise StorageError(
                    f"this connection reaches the outbox tables of another database or schema than {self.label}'s "
                    "(its search_path?): nothing stored there"
                )
            self._outbox = parameters["outbox"] = current  # the tables were made anew since: these are they
            return self._insert(connection, parameters, max_pending)
        known = connection.rows(sql.KNOWN, parameters)
        if not known:
            raise Full
        seq, stored_fingerprint = known[0]
        if stored_fingerprint != parameters["fingerprint"]:
            raise KeyReused(str(seq))
        return str(seq), True

    def _enqueued(self, event: NewEvent, *, now: float) -> dict[str, Any]:
        """The parameters of `sql.ENQUEUE` for `event`."""
        return {
            "scope": self._scoped(),
            "kind": event.kind,
            "key": event.key,
            "customer": event.customer,
            "body": event.body,
            "fingerprint": event.fingerprint,
            "stamped_at": event.stamped_at,
            "now": now,
            "outbox": self._outbox,
        }

    def enqueue_many(
        self, events: Sequence[NewEvent], *, now: float, max_pending: int
    ) -> list[tuple[str, bool] | Full | KeyReused]:
        def enqueue_all(connection: psycopg.Connection[TupleRow]) -> list[tuple[str, bool] | Full | KeyReused]:
            own = _Own(connection)
            outcomes: list[tuple[str, bool] | Full | KeyReused] = []
            with connection.transaction():
                for event in events:
                    try:
                        outcomes.append(self._insert(own, self._enqueued(event, now=now), max_pending))
                    except (Full, KeyReused) as refusal:
                        outcomes.append(refusal)
            return outcomes

        return self._front.run(enqueue_all)

    # -- delivery -----------------------------------------------------------------------------------------------

    def claim(self, owner: str, now: float, limit: int, interval: float | None) -> Claim:
        scope = self._scoped()

        def claim(connection: psycopg.Connection[TupleRow]) -> Claim:
            with _transaction(connection):
                row = connection.execute(sql.PACE, {"scope": scope}).fetchone()
                if row is None:  # the pace row was deleted by hand
                    connection.execute("INSERT INTO cms_outbox_pace (scope) VALUES (%s)", (scope,))
                    return Claim([], 0.0, True)
                next_send_at, hold_length, pending = row
                if next_send_at - now > hold_length:  # set before the database's clock went back
                    connection.execute(
                        "UPDATE cms_outbox_pace SET next_send_at = %s WHERE scope = %s", (now + hold_length, scope)
                    )
                    return Claim([], hold_length, pending)
                hold = max(next_send_at - now, 0.0)
                if hold or not pending:
                    return Claim([], hold, pending)
                expires = now + self.lease
                rows = connection.execute(
                    sql.CLAIM, {"scope": scope, "now": now, "owner": owner, "limit": limit, "expires": expires}
                ).fetchall()
                if rows and interval is not None:
                    connection.execute(sql.HOLD, {"scope": scope, "now": now, "until": now + interval * len(rows)})
                events = sorted((StoredEvent(*row) for row in rows), key=lambda event: event.seq)
                return Claim(events, 0.0, True, expires)

        return self._back.run(claim)

    def renew(self, owner: str, events: list[StoredEvent], now: float) -> tuple[list[StoredEvent], float]:
        expires = now + self.lease
        held = {
            seq
            for (seq,) in self._back.run(
                lambda connection: connection.execute(
                    "UPDATE cms_outbox_events SET claim_expires = %s "
                    "WHERE seq = ANY(%s) AND claim_owner = %s AND state = 'pending' RETURNING seq",
                    (expires, [event.seq for event in events], owner),
                ).fetchall()
            )
        }
        return [event for event in events if event.seq in held], expires

    def delivered(self, events: list[StoredEvent], now: float) -> float:
        return self._settle(sql.DELIVERED, events, now=now)

    def failed(self, event: StoredEvent, result: dict[str, Any], *, attempted: bool, now: float) -> float:
        return self._settle(sql.FAILED, [event], now=now, result=json.dumps(result), attempted=int(attempted))

    def _settle(self, statement: str, events: list[StoredEvent], **parameters: Any) -> float:
        """Run an outcome's statement; the seconds until any process may send again."""
        scope = self._scoped()
        values = {"scope": scope, "owner": self.owner, "seqs": [event.seq for event in events], **parameters}

        def settle(connection: psycopg.Connection[TupleRow]) -> TupleRow | None:
            with _transaction(connection):
                # Promotion (which holds the lock FOR UPDATE) and a head moving on must not interleave: a head
                # dropped on a snapshot that missed an event promoted meanwhile would leave its customer without
                # one, and the event unsent. The statement after the lock sees every promotion committed.
                connection.execute(sql.SHARE_PACE, {"scope": scope})
                return connection.execute(statement, values).fetchone()

        row = self._back.run(settle)
        return float(row[0]) if row is not None and row[0] is not None else 0.0

    def retry_later(
        self,
        owner: str,
        event: StoredEvent,
        result: dict[str, Any],
        *,
        now: float,
        not_before: float,
        hold_until: float,
    ) -> None:
        scope = self._scoped()

        def retry_later(connection: psycopg.Connection[TupleRow]) -> None:
            with _transaction(connection):
                connection.execute(
                    "UPDATE cms_outbox_events SET attempts = attempts + 1, not_before = %s, result = %s, "
                    "claim_owner = NULL, claim_expires = NULL "
                    "WHERE seq = %s AND state = 'pending' AND claim_owner = %s",
                    (not_before, json.dumps(result), event.seq, owner),
                )
                connection.execute(sql.HOLD, {"scope": scope, "now": now, "until": hold_until})

        self._back.run(retry_later)

    def release(self, owner: str, events: list[StoredEvent]) -> None:
        if events:
            self._back.run(
                lambda connection: connection.execute(
                    "UPDATE cms_outbox_events SET claim_owner = NULL, claim_expires = NULL "
                    "WHERE seq = ANY(%s) AND state = 'pending' AND claim_owner = %s",
                    ([event.seq for event in events], owner),
                )
            )

    def release_owner(self, owner: str, *, keep: int | None = None) -> None:
        # Claims are on heads only: the heads of the scope bound what is looked at.
        self._back.run(
            lambda connection: connection.execute(
                "UPDATE cms_outbox_events SET claim_owner = NULL, claim_expires = NULL "
                "WHERE seq IN (SELECT seq FROM cms_outbox_heads WHERE scope = %s) "
                "AND claim_owner = %s AND seq IS DISTINCT FROM %s",
                (self._scoped(), owner, keep),
            )
        )

    def release_dead_owners(self, now: float) -> int:
        scope = self._scoped()
        owners = self._back.run(
            lambda connection: connection.execute(
                "SELECT DISTINCT e.claim_owner FROM cms_outbox_heads AS h JOIN cms_outbox_events AS e "
                "ON e.seq = h.seq WHERE h.scope = %s AND e.claim_expires > %s",
                (scope, now),
            ).fetchall()
        )
        dead = [owner for (owner,) in owners if is_dead(owner)]
        for owner in dead:
            self.release_owner(owner)
        return len(dead)

    def maintain(self, now: float) -> None:
        """Promote what was committed since the last time (every call), synchronise the clock (every minute),
        and the housekeeping (every hour)."""
        scope = self._scoped()
        # Looked for first without the pace lock, which the claims of every process of the account take.
        if self._back.run(lambda connection: _exists(connection, sql.UNPROMOTED, scope)):
            while self._back.run(lambda connection: self._promote(connection, scope)) == PROMOTE_BATCH:
                pass  # a batch per call: each within the deadline
        if time.monotonic() - self._counted_at >= PENDING_COUNT_EVERY:
            self.counts()
        if time.monotonic() - self.clock.synced_at >= CLOCK_SYNC_EVERY:
            self._back.run(self.clock.sync)
        if now - self._last_forget >= FORGET_EVERY:
            # Counted as done even if it fails (its statements may outlast the deadline on a large backlog): the
            # next claim must not wait for it, nor delivery stop on it. It is tried again in an hour.
            self._last_forget = now
            before = now - DELIVERED_MEMORY
            while self._back.run(lambda connection: _forget(connection, scope, before)) == FORGET_BATCH:
                pass
            self._back.run(lambda connection: self._fold(connection, scope))

    def _promote(self, connection: psycopg.Connection[TupleRow], scope: str) -> int:
        """Promote a batch of the events committed since (`PROMOTE_BATCH` at most); how many."""
        with _transaction(connection):
            connection.execute(sql.LOCK_PACE, {"scope": scope})
            row = connection.execute(
                sql.PROMOTE, {"scope": scope, "owner": self.owner, "limit": PROMOTE_BATCH}
            ).fetchone()
        return 0 if row is None else int(row[0])

    def _fold(self, connection: psycopg.Connection[TupleRow], scope: str) -> None:
        """Fold the other processes' counts into this one's; mend heads."""
        with _transaction(connection):
            connection.execute(sql.LOCK_PACE, {"scope": scope})
            connection.execute(sql.FOLD_COUNTS, {"scope": scope, "owner": self.owner})
            # Belt and braces: a customer whose promoted events have no head (a hand edit) gets one back.
            connection.execute(sql.MEND_HEADS, {"scope": scope})

    # -- inspection and maintenance -----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        where, parameters = self._where()
        row = self._front.run(
            lambda connection: connection.execute(
                f"SELECT coalesce(sum(promoted - settled), 0) + (SELECT count(*) FROM cms_outbox_events "  # noqa: S608
                f"WHERE {where} AND NOT promoted), coalesce(sum(failed), 0), coalesce(sum(delivered), 0) "
                f"FROM cms_outbox_counts WHERE {where}",
                parameters * 2,
            ).fetchone()
        )
        assert row is not None
        pending, failed, delivered = (int(value) for value in row)
        self._pending_counted, self._queued_since, self._counted_at = pending, 0, time.monotonic()
        return {"pending": pending, "failed": failed, "delivered": delivered}

    def last_seq(self) -> int:
        row = self._front.run(
            lambda connection: connection.execute(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM cms_outbox_seq"
            ).fetchone()
        )
        assert row is not None
        return int(row[0])

    def pending_through(self, seq: int) -> bool:
        where, parameters = self._where()
        return self._front.run(
            lambda connection: _exists(
                connection,
                f"SELECT 1 FROM cms_outbox_events WHERE {where} AND state = 'pending' AND seq <= %s",  # noqa: S608
                *parameters,
                seq,
            )
        )

    def failed_events(self) -> list[StoredEvent]:
        where, parameters = self._where()
        rows = self._front.run(
            lambda connection: connection.execute(
                f"SELECT {sql.COLUMNS} FROM cms_outbox_events WHERE {where} AND state = 'failed' ORDER BY seq",  # noqa: S608
                parameters,
            ).fetchall(),
            bounded=False,  # an admin's look, as long as its rows take
        )
        return [StoredEvent(*row) for row in rows]

    def retry_failed(self) -> int:
        """Failed events become pending again, to be promoted anew: each goes after its customer's head."""
        return self._change_failed(
            "UPDATE cms_outbox_events SET state = 'pending', promoted = false, attempts = 0, not_before = 0 "
            "WHERE state = 'failed' AND {where} RETURNING scope"
        )

    def purge_failed(self) -> int:
        return self._change_failed("DELETE FROM cms_outbox_events WHERE state = 'failed' AND {where} RETURNING scope")

    def _change_failed(self, statement: str) -> int:
        where, parameters = self._where()

        def change(connection: psycopg.Connection[TupleRow]) -> int:
            with _transaction(connection):
                scopes = [scope for (scope,) in connection.execute(statement.format(where=where), parameters)]
                for scope in set(scopes):
                    connection.execute(
                        sql.CHANGE_COUNTS, {"scope": scope, "owner": self.owner, "failed": -scopes.count(scope)}
                    )
            return len(scopes)

        # An admin's command, as long as its rows take (Ctrl-C cancels it).
        return self._front.run(change, bounded=False)

    def _where(self) -> tuple[str, tuple[str, ...]]:
        """The condition (and its parameters) on this store's scope: every scope when opened without a token."""
        return ("true", ()) if self.scope is None else ("scope = %s", (self.scope,))

    def forked(self) -> None:
        pass  # the parent's sessions are left as they are: closing the child's copies would end them

    def reopened(self) -> PostgresStore:
        return PostgresStore(self._url, lease=self.lease, scope=self.scope)

    def close(self) -> None:
        self._back.close()
        self._front.close()


class _Own:
    """The outbox's own connection, as an `AppConnection`."""

    def __init__(self, connection: psycopg.Connection[TupleRow]) -> None:
        self._connection = connection

    def rows(self, statement: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self._connection.execute(statement, parameters).fetchall()

    def on_commit(self, callback: Callable[[], object]) -> None:
        callback()


class _Through:
    """Enqueues through an app's connection, in its transaction (`Store.through`)."""

    def __init__(self, store: PostgresStore, connection: AppConnection) -> None:
        self._store = store
        self._connection = connection

    def enqueue(self, event: NewEvent, *, now: float, max_pending: int) -> tuple[str, bool]:
        return self._store._insert(self._connection, self._store._enqueued(event, now=now), max_pending)

    def on_commit(self, callback: Callable[[], object]) -> None:
        self._connection.on_commit(callback)


@contextlib.contextmanager
def _transaction(connection: psycopg.Connection[TupleRow]) -> Iterator[None]:
    """A transaction of the store's own, which may hold what every process of the fleet waits for (the scope's pace
    row, the schema lock): should its process stop answering in it (stopped, frozen, cut off), the server ends it
    after `sql.IDLE_IN_TRANSACTION` seconds, instead of keeping it as long as the session lasts (hours, for a peer that
    vanished). Between its statements, the store's transactions wait for nothing but the database."""
    with connection.transaction():
        connection.execute(sql.LIMIT_IDLE_IN_TRANSACTION)
        yield


def _version(connection: psycopg.Connection[TupleRow]) -> int | None:
    """The schema's version in the schema tables are created in (the search path's first), None without one."""
    # The catalog read with the statement's snapshot: `to_regclass` may answer from this session's cache, which
    # still misses a table another process created while this one waited for the lock.
    row = connection.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables "
        "WHERE schemaname = current_schema() AND tablename = 'cms_outbox_schema')"
    ).fetchone()
    if row is None or not row[0]:
        return None
    version = connection.execute("SELECT max(version) FROM cms_outbox_schema").fetchone()
    return int(version[0]) if version is not None and version[0] is not None else 0


def _outbox_id(connection: psycopg.Connection[TupleRow]) -> str:
    """The id of the outbox whose tables `connection` reaches, made with them."""
    row = connection.execute(sql.OUTBOX).fetchone()
    if row is None:
        raise StorageError("the outbox's tables have no row in cms_outbox_schema (deleted by hand?)")
    return str(row[0])


def _forget(connection: psycopg.Connection[TupleRow], scope: str, before: float) -> int:
    """Forget a batch of the deliveries done before `before` (`FORGET_BATCH` at most); how many."""
    return connection.execute(sql.FORGET, {"scope": scope, "before": before, "limit": FORGET_BATCH}).rowcount


def _exists(connection: psycopg.Connection[TupleRow], query: str, *parameters: Any) -> bool:
    row = connection.execute(f"SELECT EXISTS ({query})", parameters).fetchone()
    return bool(row and row[0])
