"""The outbox's PostgreSQL store: a database that every process of every machine with an `Outbox` on it shares.

Tables (prefixed `cms_outbox_`, in the first schema of the connection's search path) are created on first use by
the outbox's own connection, under a transaction-scoped advisory lock, and only when missing: many processes may
start at once, and a schema in place costs no DDL (a `CREATE ... IF NOT EXISTS` locks the table even then).
`cms outbox migrate URL --sql` prints them for teams whose migrations run elsewhere.

`events` holds pending and failed events, each in a `scope` (a hash of the API token: `token_scope`), so that the
events of different accounts sharing a database are delivered with their own token, each account at its own pace.
An app's transaction only inserts its event (`Within`): nothing it does waits for delivery, or delivery for it.
Delivery then "promotes" committed events (`promoted`): each customer's oldest promoted pending event is its head
(`heads`), the only one of its customer that may be sent, so that a customer's events go one at a time, in the
order their transactions committed (overlapping transactions of one customer: in the order of their ids, which
are handed out before commit, when both committed before the earlier's turn). A claim reads `heads` in `seq`
order, under the scope's `pace` row lock (`FOR UPDATE`), which also serialises promotion and holds every
process of the account to one pace and to a 429's Retry-After. Counts are kept per delivering process (`counts`)
and summed, so that counting stays cheap at millions of rows without a row every transaction would update.

Nothing needs a session held across transactions: no LISTEN (a process's own commits wake its delivery; others
look every second), no session advisory lock, no prepared statement that must survive: it works through PgBouncer
in transaction mode. Times are seconds on the database's clock (`DatabaseClock`), not the machines'.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import conninfo as _conninfo

from .connections import AppConnection, adapt
from .store import (
    DELIVERED_MEMORY,
    LEASE,
    LONGEST_WAIT,
    Claim,
    Full,
    KeyReused,
    StorageError,
    StoredEvent,
    fingerprint,
    is_dead,
)
from .targets import label

if TYPE_CHECKING:
    from psycopg.rows import TupleRow

#: The schema written here (`cms_outbox_schema.version`); a database with a higher one is refused.
SCHEMA_VERSION = 1
#: Held (transaction-scoped) while creating or migrating the tables: any 64-bit number no app would pick.
_SCHEMA_LOCK = 0x434D535F4F555442  # "CMS_OUTB"
#: Events promoted per statement.
PROMOTE_BATCH = 10_000
#: How often the clock is synchronised with the database's, deliveries forgotten, per-process counts folded.
CLOCK_SYNC_EVERY = 60.0
FORGET_EVERY = 3600.0
#: libpq settings unless the URL says otherwise: a dead server or network is noticed instead of hanging.
_CONNECTION_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
    "application_name": "cms-python-client outbox",
}

SCHEMA = f"""
CREATE TABLE cms_outbox_schema (version integer NOT NULL);
INSERT INTO cms_outbox_schema VALUES ({SCHEMA_VERSION});
CREATE SEQUENCE cms_outbox_seq;
CREATE TABLE cms_outbox_events (
    seq bigint PRIMARY KEY DEFAULT nextval('cms_outbox_seq'),
    scope text NOT NULL,
    kind text NOT NULL,
    idempotency_key text NOT NULL,
    customer text NOT NULL,
    body text NOT NULL,
    fingerprint text NOT NULL,
    stamped_at double precision,
    queued_at double precision NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'failed')),
    promoted boolean NOT NULL DEFAULT false,
    attempts integer NOT NULL DEFAULT 0,
    not_before double precision NOT NULL DEFAULT 0,
    claim_owner text,
    claim_expires double precision,
    result text,
    UNIQUE (scope, idempotency_key)
);
ALTER SEQUENCE cms_outbox_seq OWNED BY cms_outbox_events.seq;
CREATE INDEX cms_outbox_events_new ON cms_outbox_events (scope, seq) WHERE NOT promoted;
CREATE INDEX cms_outbox_events_pending ON cms_outbox_events (scope, seq) WHERE state = 'pending';
CREATE INDEX cms_outbox_events_next ON cms_outbox_events (scope, customer, seq) WHERE state = 'pending' AND promoted;
CREATE TABLE cms_outbox_heads (
    scope text NOT NULL,
    customer text NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (scope, customer)
);
CREATE INDEX cms_outbox_heads_order ON cms_outbox_heads (scope, seq);
CREATE TABLE cms_outbox_delivered (
    scope text NOT NULL,
    idempotency_key text NOT NULL,
    seq bigint NOT NULL,
    fingerprint text NOT NULL,
    done_at double precision NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
);
CREATE INDEX cms_outbox_delivered_time ON cms_outbox_delivered (done_at);
CREATE TABLE cms_outbox_pace (
    scope text PRIMARY KEY,
    next_send_at double precision NOT NULL DEFAULT 0,
    hold_length double precision NOT NULL DEFAULT 0
);
CREATE TABLE cms_outbox_counts (
    scope text NOT NULL,
    owner text NOT NULL,
    promoted bigint NOT NULL DEFAULT 0,
    settled bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, owner)
);
"""  # noqa: S608 - constant text

# The enqueue, on the outbox's own connection or an app's (so: named parameters, no casts, one statement). The
# pending count for `max_pending`: the promoted ones by the per-process counts, the others counted, at most
# max_pending of them (delivery promotes every second: there are few).
ENQUEUE = """
INSERT INTO cms_outbox_events (scope, kind, idempotency_key, customer, body, fingerprint, stamped_at, queued_at)
SELECT %(scope)s, %(kind)s, %(key)s, %(customer)s, %(body)s, %(fingerprint)s, %(stamped_at)s, %(now)s
WHERE NOT EXISTS (SELECT 1 FROM cms_outbox_delivered WHERE scope = %(scope)s AND idempotency_key = %(key)s)
  AND (SELECT coalesce(sum(promoted - settled), 0) FROM cms_outbox_counts WHERE scope = %(scope)s)
      + (SELECT count(*) FROM (
            SELECT 1 FROM cms_outbox_events WHERE scope = %(scope)s AND NOT promoted LIMIT %(max_pending)s
         ) AS fresh) < %(max_pending)s
ON CONFLICT (scope, idempotency_key) DO NOTHING
RETURNING seq
"""
# What holds the key when the insert did not happen.
KNOWN = """
SELECT seq, fingerprint FROM cms_outbox_events WHERE scope = %(scope)s AND idempotency_key = %(key)s
UNION ALL
SELECT seq, fingerprint FROM cms_outbox_delivered WHERE scope = %(scope)s AND idempotency_key = %(key)s
"""
_COLUMNS = "seq, kind, idempotency_key, body, stamped_at, queued_at, attempts, result"
_PROMOTE = """
WITH fresh AS (
    SELECT seq, customer FROM cms_outbox_events WHERE scope = %(scope)s AND NOT promoted ORDER BY seq LIMIT %(limit)s
), marked AS (
    UPDATE cms_outbox_events AS e SET promoted = true FROM fresh WHERE e.seq = fresh.seq
), heads AS (
    INSERT INTO cms_outbox_heads (scope, customer, seq)
    SELECT DISTINCT ON (customer) %(scope)s, customer, seq FROM fresh ORDER BY customer, seq
    ON CONFLICT DO NOTHING
), counted AS (
    INSERT INTO cms_outbox_counts (scope, owner, promoted)
    SELECT %(scope)s, %(owner)s, count(*) FROM fresh HAVING count(*) > 0
    ON CONFLICT (scope, owner) DO UPDATE SET promoted = cms_outbox_counts.promoted + excluded.promoted
)
SELECT count(*) FROM fresh
"""
_PACE = """
SELECT next_send_at, hold_length,
       EXISTS (SELECT 1 FROM cms_outbox_events WHERE scope = %(scope)s AND state = 'pending')
FROM cms_outbox_pace WHERE scope = %(scope)s FOR UPDATE
"""
# Only heads can be sent: the scan skips, at most, the heads that wait for a retry or are claimed by another
# process, however long each customer's backlog.
_CLAIM = f"""
WITH chosen AS (
    SELECT e.seq FROM cms_outbox_heads AS h JOIN cms_outbox_events AS e ON e.seq = h.seq
    WHERE h.scope = %(scope)s
      AND (e.not_before <= %(now)s OR e.not_before > %(now)s + {LONGEST_WAIT})
      AND (e.claim_expires IS NULL OR e.claim_expires <= %(now)s OR e.claim_owner = %(owner)s)
    ORDER BY h.seq LIMIT %(limit)s
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE cms_outbox_events AS e SET claim_owner = %(owner)s, claim_expires = %(expires)s
FROM chosen WHERE e.seq = chosen.seq
RETURNING {", ".join(f"e.{column}" for column in _COLUMNS.split(", "))}
"""  # noqa: S608 - constant text
_HOLD = """
UPDATE cms_outbox_pace SET next_send_at = %(until)s, hold_length = %(until)s - %(now)s
WHERE scope = %(scope)s AND next_send_at < %(until)s
"""


def _settling(change: str, *, delivered: int, failed: int) -> str:
    """One statement that takes claimed events out of `pending` (`change`: a CTE named `gone` returning their
    seq, customer and promoted), moves each customer's head to its next promoted pending event (the statement's
    snapshot still sees the events `gone` changed: they are left out by seq), and counts them."""
    return f"""
WITH gone AS ({change}),
nexts AS (
    SELECT g.customer, g.seq AS old, (
        SELECT e.seq FROM cms_outbox_events AS e
        WHERE e.scope = %(scope)s AND e.customer = g.customer AND e.state = 'pending' AND e.promoted
          AND e.seq <> ALL(%(seqs)s)
        ORDER BY e.seq LIMIT 1
    ) AS new
    FROM gone AS g
), moved AS (
    UPDATE cms_outbox_heads AS h SET seq = n.new FROM nexts AS n
    WHERE h.scope = %(scope)s AND h.customer = n.customer AND h.seq = n.old AND n.new IS NOT NULL
), dropped AS (
    DELETE FROM cms_outbox_heads AS h USING nexts AS n
    WHERE h.scope = %(scope)s AND h.customer = n.customer AND h.seq = n.old AND n.new IS NULL
), counted AS (
    INSERT INTO cms_outbox_counts (scope, owner, promoted, settled, failed, delivered)
    SELECT %(scope)s, %(owner)s, count(*) FILTER (WHERE NOT promoted), count(*), {failed} * count(*),
           {delivered} * count(*)
    FROM gone HAVING count(*) > 0
    ON CONFLICT (scope, owner) DO UPDATE SET
        promoted = cms_outbox_counts.promoted + excluded.promoted,
        settled = cms_outbox_counts.settled + excluded.settled,
        failed = cms_outbox_counts.failed + excluded.failed,
        delivered = cms_outbox_counts.delivered + excluded.delivered
)
SELECT count(*) FROM gone
"""  # noqa: S608 - constant text


_DELIVERED = _settling(
    """
    DELETE FROM cms_outbox_events WHERE seq = ANY(%(seqs)s) AND scope = %(scope)s AND state = 'pending'
    RETURNING seq, customer, promoted, idempotency_key, fingerprint
), kept AS (
    INSERT INTO cms_outbox_delivered (scope, idempotency_key, seq, fingerprint, done_at)
    SELECT %(scope)s, idempotency_key, seq, fingerprint, %(now)s FROM gone
    ON CONFLICT DO NOTHING
""",
    delivered=1,
    failed=0,
)
_FAILED = _settling(
    """
    UPDATE cms_outbox_events SET state = 'failed', result = %(result)s, attempts = attempts + %(attempted)s,
        claim_owner = NULL, claim_expires = NULL
    WHERE seq = ANY(%(seqs)s) AND scope = %(scope)s AND state = 'pending'
    RETURNING seq, customer, promoted
""",
    delivered=0,
    failed=1,
)
_CHANGE_COUNTS = """
INSERT INTO cms_outbox_counts (scope, owner, failed) VALUES (%(scope)s, %(owner)s, %(failed)s)
ON CONFLICT (scope, owner) DO UPDATE SET failed = cms_outbox_counts.failed + excluded.failed
"""
_FOLD_COUNTS = """
WITH others AS (
    DELETE FROM cms_outbox_counts WHERE scope = %(scope)s AND owner <> %(owner)s
    RETURNING promoted, settled, failed, delivered
)
INSERT INTO cms_outbox_counts (scope, owner, promoted, settled, failed, delivered)
SELECT %(scope)s, %(owner)s, sum(promoted), sum(settled), sum(failed), sum(delivered) FROM others
HAVING count(*) > 0
ON CONFLICT (scope, owner) DO UPDATE SET
    promoted = cms_outbox_counts.promoted + excluded.promoted,
    settled = cms_outbox_counts.settled + excluded.settled,
    failed = cms_outbox_counts.failed + excluded.failed,
    delivered = cms_outbox_counts.delivered + excluded.delivered
"""
_R = TypeVar("_R")
#: The live links of this process, made unusable in a forked child (see `_forget_in_child`).
_LINKS: weakref.WeakSet[_Link] = weakref.WeakSet()


def schema_sql() -> str:
    """The SQL that creates the outbox's tables, for a migration tool of your own."""
    return SCHEMA.strip() + "\n"


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
        self._settings = _connection_settings(url)
        self._scrub = _scrubber(self._settings)
        #: Direct enqueues and what `Outbox` reads; and the delivery thread's own.
        self._front = _Link(self._settings, self._scrub)
        self._back = _Link(self._settings, self._scrub)
        self.locks = (self._back.lock, self._front.lock)
        self.owner = f"inspector|{os.getpid()}" if scope is None else ""
        self._last_forget = -FORGET_EVERY
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
        with connection.transaction():
            version = _version(connection)
            if version is None:
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                version = _version(connection)  # again: another process may have created them meanwhile
                if version is None:
                    connection.execute(SCHEMA.encode())
                    version = SCHEMA_VERSION
            if version > SCHEMA_VERSION:
                raise ValueError(
                    f"The outbox in {self.label} was written by a newer cms-python-client (schema version {version}; "
                    f"this one reads up to {SCHEMA_VERSION}). Upgrade cms-python-client to deliver its events."
                )
            if self.scope is not None:
                connection.execute(
                    "INSERT INTO cms_outbox_pace (scope) VALUES (%s) ON CONFLICT DO NOTHING", (self.scope,)
                )

    def _scoped(self) -> str:
        if self.scope is None:
            raise RuntimeError("this store was opened without a token: it can look and retry, not deliver")
        return self.scope

    # -- enqueue ------------------------------------------------------------------------------------------------

    def enqueue(
        self, kind: str, key: str, customer: str, body: str, *, stamped_at: float | None, now: float, max_pending: int
    ) -> tuple[str, bool]:
        parameters = self._enqueued(kind, key, customer, body, stamped_at=stamped_at, now=now, max_pending=max_pending)
        return self._front.run(lambda connection: _enqueue(_Own(connection), parameters))

    def through(self, connection: object) -> _Through:
        return _Through(self, adapt(connection))

    def _enqueued(
        self, kind: str, key: str, customer: str, body: str, *, stamped_at: float | None, now: float, max_pending: int
    ) -> dict[str, Any]:
        return {
            "scope": self._scoped(),
            "kind": kind,
            "key": key,
            "customer": customer,
            "body": body,
            "fingerprint": fingerprint(kind, body),
            "stamped_at": stamped_at,
            "now": now,
            "max_pending": max_pending,
        }

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        with self._front.transaction():
            yield

    # -- delivery -----------------------------------------------------------------------------------------------

    def claim(self, owner: str, now: float, limit: int, interval: float | None) -> Claim:
        scope = self._scoped()

        def claim(connection: psycopg.Connection[TupleRow]) -> Claim:
            with connection.transaction():
                row = connection.execute(_PACE, {"scope": scope}).fetchone()
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
                    _CLAIM, {"scope": scope, "now": now, "owner": owner, "limit": limit, "expires": expires}
                ).fetchall()
                if rows and interval is not None:
                    connection.execute(_HOLD, {"scope": scope, "now": now, "until": now + interval * len(rows)})
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

    def delivered(self, events: list[StoredEvent], now: float) -> None:
        self._settle(_DELIVERED, events, now=now)

    def failed(self, event: StoredEvent, result: dict[str, Any], *, attempted: bool) -> None:
        self._settle(_FAILED, [event], result=json.dumps(result), attempted=int(attempted))

    def _settle(self, statement: str, events: list[StoredEvent], **parameters: Any) -> None:
        values = {"scope": self._scoped(), "owner": self.owner, "seqs": [event.seq for event in events], **parameters}
        self._back.run(lambda connection: connection.execute(statement, values))

    def retry_later(
        self, event: StoredEvent, result: dict[str, Any], *, now: float, not_before: float, hold_until: float
    ) -> None:
        scope = self._scoped()

        def retry_later(connection: psycopg.Connection[TupleRow]) -> None:
            with connection.transaction():
                connection.execute(
                    "UPDATE cms_outbox_events SET attempts = attempts + 1, not_before = %s, result = %s, "
                    "claim_owner = NULL, claim_expires = NULL WHERE seq = %s AND state = 'pending'",
                    (not_before, json.dumps(result), event.seq),
                )
                connection.execute(_HOLD, {"scope": scope, "now": now, "until": hold_until})

        self._back.run(retry_later)

    def release(self, events: list[StoredEvent]) -> None:
        if events:
            self._back.run(
                lambda connection: connection.execute(
                    "UPDATE cms_outbox_events SET claim_owner = NULL, claim_expires = NULL "
                    "WHERE seq = ANY(%s) AND state = 'pending'",
                    ([event.seq for event in events],),
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
        forget old deliveries and fold the counts of other processes into this one's (every hour)."""
        scope = self._scoped()
        self._back.run(lambda connection: self._promote(connection, scope))
        if time.monotonic() - self.clock.synced_at >= CLOCK_SYNC_EVERY:
            self._back.run(self.clock.sync)
        if now - self._last_forget >= FORGET_EVERY:
            self._back.run(lambda connection: self._forget(connection, scope, now - DELIVERED_MEMORY))
            self._last_forget = now

    def _promote(self, connection: psycopg.Connection[TupleRow], scope: str) -> None:
        # Looked for first without the pace lock, which the claims of every process of the account take.
        if not _exists(connection, "SELECT 1 FROM cms_outbox_events WHERE scope = %s AND NOT promoted", scope):
            return
        while True:
            with connection.transaction():
                connection.execute("SELECT 1 FROM cms_outbox_pace WHERE scope = %s FOR UPDATE", (scope,))
                row = connection.execute(
                    _PROMOTE, {"scope": scope, "owner": self.owner, "limit": PROMOTE_BATCH}
                ).fetchone()
            if row is None or row[0] < PROMOTE_BATCH:
                return

    def _forget(self, connection: psycopg.Connection[TupleRow], scope: str, before: float) -> None:
        while True:
            deleted = connection.execute(
                "DELETE FROM cms_outbox_delivered WHERE ctid = ANY(ARRAY("
                "SELECT ctid FROM cms_outbox_delivered WHERE scope = %s AND done_at < %s LIMIT 5000))",
                (scope, before),
            ).rowcount
            if deleted < 5000:
                break
        with connection.transaction():
            connection.execute("SELECT 1 FROM cms_outbox_pace WHERE scope = %s FOR UPDATE", (scope,))
            connection.execute(_FOLD_COUNTS, {"scope": scope, "owner": self.owner})

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
                f"SELECT {_COLUMNS} FROM cms_outbox_events WHERE {where} AND state = 'failed' ORDER BY seq",  # noqa: S608
                parameters,
            ).fetchall()
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
            with connection.transaction():
                scopes = [scope for (scope,) in connection.execute(statement.format(where=where), parameters)]
                for scope in set(scopes):
                    connection.execute(
                        _CHANGE_COUNTS, {"scope": scope, "owner": self.owner, "failed": -scopes.count(scope)}
                    )
            return len(scopes)

        return self._front.run(change)

    def _where(self) -> tuple[str, tuple[str, ...]]:
        """The condition (and its parameters) on this store's scope: every scope when opened without a token."""
        return ("true", ()) if self.scope is None else ("scope = %s", (self.scope,))

    def reopened(self) -> PostgresStore:
        return PostgresStore(self._url, lease=self.lease, scope=self.scope)

    def close(self) -> None:
        self._back.close()
        self._front.close()


class _Link:
    """One connection of the store's own, made on first use and again once it broke (a server restarted, a
    network cut): a call fails with `StorageError`, the next one connects anew."""

    def __init__(self, settings: dict[str, Any], scrub: Callable[[str], str]) -> None:
        self.lock = threading.RLock()
        self._settings = settings
        self._scrub = scrub
        self._connection: psycopg.Connection[TupleRow] | None = None
        _LINKS.add(self)

    def run(self, work: Callable[[psycopg.Connection[TupleRow]], _R]) -> _R:
        with self.lock, self._errors():
            return work(self._connected())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.lock, self._errors(), self._connected().transaction():
            yield

    def _connected(self) -> psycopg.Connection[TupleRow]:
        if self._connection is None or self._connection.closed:
            # autocommit: a transaction only where asked for; prepare_threshold=None: no prepared statement,
            # which PgBouncer in transaction mode would hand to another server connection.
            self._connection = psycopg.connect(**self._settings, autocommit=True, prepare_threshold=None)
        return self._connection

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            connection = self._connection
            if connection is not None and (connection.broken or connection.closed):
                self.close()
            raise StorageError(self._scrub(str(exc).strip())) from None

    def forget_in_child(self) -> None:
        """In a forked child: close the inherited connection without a word to the server, which still talks to
        the parent on that socket (its descriptor is pointed at /dev/null first)."""
        connection, self._connection = self._connection, None
        self.lock = threading.RLock()
        if connection is not None and not connection.closed:
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(devnull, connection.pgconn.socket)
                os.close(devnull)
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error):
                connection.close()


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

    def enqueue(
        self, kind: str, key: str, customer: str, body: str, *, stamped_at: float | None, now: float, max_pending: int
    ) -> tuple[str, bool]:
        parameters = self._store._enqueued(
            kind, key, customer, body, stamped_at=stamped_at, now=now, max_pending=max_pending
        )
        return _enqueue(self._connection, parameters)

    def on_commit(self, callback: Callable[[], object]) -> None:
        self._connection.on_commit(callback)


def _enqueue(connection: AppConnection, parameters: dict[str, Any]) -> tuple[str, bool]:
    """Insert an event (one statement); else say why not: the same event (duplicate), another one under its key
    (`KeyReused`), or a full outbox (`Full`)."""
    inserted = connection.rows(ENQUEUE, parameters)
    if inserted:
        return str(inserted[0][0]), False
    known = connection.rows(KNOWN, parameters)
    if not known:
        raise Full
    seq, stored_fingerprint = known[0]
    if stored_fingerprint != parameters["fingerprint"]:
        raise KeyReused(str(seq))
    return str(seq), True


def _version(connection: psycopg.Connection[TupleRow]) -> int | None:
    row = connection.execute("SELECT to_regclass('cms_outbox_schema') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return None
    version = connection.execute("SELECT max(version) FROM cms_outbox_schema").fetchone()
    return int(version[0]) if version is not None and version[0] is not None else 0


def _exists(connection: psycopg.Connection[TupleRow], query: str, *parameters: Any) -> bool:
    row = connection.execute(f"SELECT EXISTS ({query})", parameters).fetchone()
    return bool(row and row[0])


def _connection_settings(url: str) -> dict[str, Any]:
    """The URL's connection settings, with `_CONNECTION_DEFAULTS` where it says nothing. `ValueError` (without the
    password) for a URL libpq cannot read."""
    try:
        settings: dict[str, Any] = _conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ValueError(f"Not a PostgreSQL URL libpq can read: {label(url)} ({_scrubber({})(str(exc))})") from None
    return {**_CONNECTION_DEFAULTS, **settings}


def _scrubber(settings: dict[str, Any]) -> Callable[[str], str]:
    """What takes the password out of a driver's message (libpq echoes a connection string it cannot parse)."""
    password = str(settings.get("password") or "")

    def scrub(message: str) -> str:
        if password:
            message = message.replace(password, "***")
        return label(re.sub(r"\s+", " ", message))

    return scrub


def _forget_in_child() -> None:
    for link in list(_LINKS):
        link.forget_in_child()


os.register_at_fork(after_in_child=_forget_in_child)
