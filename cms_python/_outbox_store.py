"""The outbox's SQLite file: its schema, and every read and write of it, each in one transaction.

One `Store` is one connection, shared by the threads of one `Outbox` under `lock`, and, for a file, a second
one for the delivery thread, under `reader_lock`: with it the thread looks for events to send and checkpoints
the WAL without holding up an enqueue (WAL readers never block the writer). Several processes may open the same
file: SQLite's locks make each transaction atomic across them, and an event is sent only by the
holder of its claim (`claim_owner` until `claim_expires`).

`events` holds the `pending` events (to send) and the `failed` ones (a permanent refusal, or expired; kept until
retried or purged). A delivered event leaves it for `delivered`, which keeps its idempotency key and a
fingerprint of its content for `DELIVERED_MEMORY`, so that the same event queued again is recognised.
An enqueue writes three pages (the row, its key and its customer in their indexes): every count is kept by
triggers on the delivery side, in `counters`, with `next_send_at`, the earliest time any process may send again
(pacing, and the wait a 429 or an outage asks for). `seq` numbers never come back: an event takes the highest
`seq` ever given (the table's highest, or `counters.high_water` once that row left) plus one, so it also counts
every event ever queued.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any, Literal

#: "CMSo" in the header's application_id field: tells an outbox from any other SQLite file.
APPLICATION_ID = 0x434D536F
#: The schema written here (PRAGMA user_version); a file with a higher one is from a newer SDK and refused.
SCHEMA_VERSION = 1
#: How long the keys (and content fingerprints) of delivered events are remembered.
DELIVERED_MEMORY = 30 * 24 * 3600.0
#: How long a claim holds an event for its process. A process that exits or closes releases its claims at
#: once, and one that died on this host is noticed; only a claim of a process on another host runs this long.
LEASE = 300.0
#: How long a transaction waits for another process's to end before the operation fails.
BUSY_TIMEOUT = 10.0
#: WAL pages past which a commit checkpoints by itself: only when no delivery thread has done it (each does, every
#: second), as a checkpoint costs an fsync.
AUTOCHECKPOINT_PAGES = 10_000
MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    customer TEXT NOT NULL,
    body TEXT NOT NULL,
    stamped_at REAL,
    queued_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    claim_owner TEXT,
    claim_expires REAL,
    result TEXT
);
CREATE INDEX pending_by_customer ON events (customer, seq) WHERE state = 'pending';
CREATE TABLE delivered (
    idempotency_key TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    done_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX delivered_by_time ON delivered (done_at);
CREATE TABLE counters (name TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;
INSERT INTO counters VALUES
    ('high_water', 0), ('left_pending', 0), ('failed', 0), ('delivered', 0), ('next_send_at', 0.0);
CREATE TRIGGER count_state AFTER UPDATE OF state ON events WHEN OLD.state != NEW.state BEGIN
    UPDATE counters SET value = value + iif(NEW.state = 'failed', 1, -1) WHERE name IN ('left_pending', 'failed');
END;
CREATE TRIGGER count_delete AFTER DELETE ON events BEGIN
    UPDATE counters SET value = max(value, OLD.seq) WHERE name = 'high_water';
    UPDATE counters SET value = value + 1 WHERE name = 'left_pending' AND OLD.state = 'pending';
    UPDATE counters SET value = value - 1 WHERE name = 'failed' AND OLD.state = 'failed';
END;
CREATE TRIGGER count_delivered AFTER INSERT ON delivered BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'delivered';
END;
"""
# The highest seq ever given; pending events: every event ever queued less those that left `pending`.
_LAST_SEQ = """
max(coalesce((SELECT max(seq) FROM events), 0), (SELECT value FROM counters WHERE name = 'high_water'))
"""
_PENDING = f"{_LAST_SEQ} - (SELECT value FROM counters WHERE name = 'left_pending')"  # noqa: S608
_ENQUEUE = f"""
INSERT INTO events (seq, kind, idempotency_key, customer, body, stamped_at, queued_at)
SELECT {_LAST_SEQ} + 1, ?1, ?2, ?3, ?4, ?5, ?6
WHERE {_PENDING} < ?7
  AND NOT EXISTS (SELECT 1 FROM events WHERE idempotency_key = ?2)
  AND NOT EXISTS (SELECT 1 FROM delivered WHERE idempotency_key = ?2)
"""  # noqa: S608 - constant text
_COLUMNS = "seq, kind, idempotency_key, body, stamped_at, queued_at, attempts, result"
# In SQL rather than Python: past a customer whose oldest event waits, its later ones are skipped by SQLite (which
# lets other threads run meanwhile), however many there are. A retry due more than 1000 s from now (longer than
# any wait the outbox asks for) was scheduled before the wall clock went back: it is due now.
_SENDABLE = """
SELECT seq FROM events AS e
WHERE state = 'pending' AND (not_before <= :now OR not_before > :now + 1000)
  AND (claim_expires IS NULL OR claim_expires <= :now OR claim_owner = :owner)
  AND NOT EXISTS (
    SELECT 1 FROM events AS earlier
    WHERE earlier.state = 'pending' AND earlier.customer = e.customer AND earlier.seq < e.seq
  )
ORDER BY seq LIMIT :limit
"""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as stored: `body` is the request body (JSON text), `result` the last result dict (JSON)."""

    seq: int
    kind: Literal["lead", "sale"]
    idempotency_key: str
    body: str
    stamped_at: float | None
    queued_at: float
    attempts: int
    result: str | None

    @property
    def event_id(self) -> str:
        return str(self.seq)


@dataclass(frozen=True, slots=True)
class Claim:
    """What `Store.claim` found: events now held for the caller; else `hold` seconds until any process may send
    again (0: not held), and how many events are pending in the whole file."""

    events: list[StoredEvent]
    hold: float
    pending: int


class Full(Exception):
    """`max_pending` events are pending."""


class KeyReused(Exception):
    """The idempotency key belongs to another stored event with different content."""

    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id


def fingerprint(kind: str, body: str) -> str:
    """What makes two events "the same": their kind and request body (which holds no timestamp the outbox
    stamped: that one is `stamped_at`, apart)."""
    canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{kind}\n{canonical}".encode()).hexdigest()


def process_owner() -> str:
    """This process's claim owner: host (and PID namespace, for containers sharing a volume), PID, a nonce."""
    return f"{_host()}|{os.getpid()}|{os.urandom(6).hex()}"


def _host() -> str:
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # not Linux
        namespace = 0
    return f"{socket.gethostname()}:{namespace}"


def _is_dead(owner: str) -> bool:
    """True only when the owner is a process of this host (and PID namespace) that no longer exists."""
    host, _, rest = owner.partition("|")
    pid_text = rest.partition("|")[0]
    if host != _host() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. another user's process: alive
        return False
    return False


class Store:
    """The outbox file (or an in-memory database), opened, checked and ready.

    Raises `ValueError` (naming the path) when the file is not an outbox, is corrupt, or was written by a newer
    SDK; `OSError` when it cannot be created or opened.
    """

    def __init__(self, path: str, durability: Literal["process", "power"]) -> None:
        self.path = path
        # Reentrant: `Outbox._batch` holds it around many enqueues, which take it too.
        self.lock = threading.RLock()
        #: Held while using the delivery thread's connection: like `lock`, taken by the fork handler, so that no
        #: thread is inside SQLite then.
        self.reader_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._durability = durability
        if path == MEMORY:
            self.connection = sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)
            self.connection.executescript(_SCHEMA)
            self._set_identity()
            return
        _create_owner_only(path)
        try:
            self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            raise OSError(f"Cannot open the outbox {path}: {exc}") from None
        try:
            self._open(durability)
        except BaseException:
            self.connection.close()
            raise

    def _open(self, durability: str) -> None:
        try:
            self._check()  # before anything is written: a file that is not an outbox is left untouched
            # WAL: a commit appends to the log, and readers never block the writer.
            self.connection.execute("PRAGMA journal_mode = WAL")
            self._tune(self.connection)
            with self.transaction():
                if self._check() == "new":  # checked again: another process may have set it up meanwhile
                    for statement in _statements(_SCHEMA):
                        self.connection.execute(statement)
                    self._set_identity()
            self.connection.execute("SELECT value FROM counters").fetchall()
        except sqlite3.OperationalError as exc:
            raise OSError(f"Cannot open the outbox {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
            raise ValueError(
                f"{self.path} is not a readable CutMeShort outbox ({exc}); it was left as it is. "
                "Move it away to start a new outbox: the events in it may still be recoverable."
            ) from None

    def _tune(self, connection: sqlite3.Connection) -> None:
        connection.execute(f"PRAGMA synchronous = {'FULL' if self._durability == 'power' else 'NORMAL'}")
        connection.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
        connection.execute("PRAGMA journal_size_limit = 16777216")  # the WAL shrinks back to 16 MB after a burst

    def _reading(self) -> sqlite3.Connection:
        """The delivery thread's connection (call with `reader_lock` held): the one connection for ":memory:"."""
        if self.path == MEMORY:
            return self.connection
        if self._reader is None:
            self._reader = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
            )
            self._tune(self._reader)
        return self._reader

    def checkpoint(self) -> None:
        """Copy the WAL into the database (PASSIVE: never waits for, nor blocks, the other connections), on the
        delivery thread's connection, so that enqueues go on meanwhile."""
        if self.path == MEMORY:
            return
        with self.reader_lock:
            self._reading().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _check(self) -> Literal["new", "ours"]:
        """Whether the file is empty (a new outbox) or an outbox this SDK reads; `ValueError` otherwise."""
        connection = self.connection
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        objects = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if application_id == 0 and version == 0 and objects == 0:
            return "new"
        if application_id != APPLICATION_ID:
            raise ValueError(
                f"{self.path} is an SQLite database but not a CutMeShort outbox; it was left as it is. "
                "Give the Outbox a path of its own."
            )
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"{self.path} is an outbox written by a newer cms-python-client (schema version {version}; this "
                f"one reads up to {SCHEMA_VERSION}). Upgrade cms-python-client to deliver its events."
            )
        return "ours"

    def _set_identity(self) -> None:
        self.connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        self.connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def transaction(self) -> _Transaction:
        """`with store.transaction():` a write transaction (BEGIN IMMEDIATE), committed or rolled back."""
        return _Transaction(self.connection)

    # -- enqueue ------------------------------------------------------------------------------------------------

    def enqueue(
        self, kind: str, key: str, customer: str, body: str, *, stamped_at: float | None, now: float, max_pending: int
    ) -> tuple[str, bool]:
        """Store a pending event in one statement (its own transaction): `(event_id, duplicate)`.

        An event with the same key and content already stored gives its id and `duplicate` True. Raises `Full`,
        `KeyReused`, or `sqlite3.Error` (storage failure).
        """
        with self.lock:
            cursor = self.connection.execute(_ENQUEUE, (kind, key, customer, body, stamped_at, now, max_pending))
            if cursor.rowcount == 1:
                return str(cursor.lastrowid), False
            return self._not_inserted(
                kind, key, customer, body, stamped_at=stamped_at, now=now, max_pending=max_pending
            )

    def _not_inserted(
        self, kind: str, key: str, customer: str, body: str, *, stamped_at: float | None, now: float, max_pending: int
    ) -> tuple[str, bool]:
        with self.transaction():
            connection = self.connection
            row = connection.execute("SELECT seq, kind, body FROM events WHERE idempotency_key = ?", (key,))
            found = row.fetchone()
            if found is not None:
                seq, stored_kind, stored_body = found
                known = fingerprint(stored_kind, stored_body)
            else:
                found = connection.execute(
                    "SELECT seq, fingerprint FROM delivered WHERE idempotency_key = ?", (key,)
                ).fetchone()
                if found is None:
                    # The outbox was full when the statement ran; a delivery may have made room since.
                    cursor = connection.execute(_ENQUEUE, (kind, key, customer, body, stamped_at, now, max_pending))
                    if cursor.rowcount != 1:
                        raise Full
                    return str(cursor.lastrowid), False
                seq, known = found
            if known != fingerprint(kind, body):
                raise KeyReused(str(seq))
            return str(seq), True

    # -- delivery -----------------------------------------------------------------------------------------------

    def claim(self, owner: str, now: float, limit: int, interval: float | None) -> Claim:
        """Hold up to `limit` sendable events for `owner` (one transaction), unless sending must wait.

        Sendable: pending, not waiting for a retry, not claimed by a live claim (the caller's own are stale: it
        claims only with nothing in flight), and the oldest pending event of its customer, so that a later event
        never overtakes an earlier one of its customer. Oldest first.
        `interval`: seconds between sends (pacing), shared by every process using the file: each claimed event
        takes the next slot.
        """
        with self.reader_lock, self.lock if self.path == MEMORY else contextlib.nullcontext():
            # Looking is a read, on the delivery thread's connection: the scan can take a while with a long queue.
            reader = self._reading()
            pending, next_send_at = reader.execute(
                f"SELECT {_PENDING}, (SELECT value FROM counters WHERE name = 'next_send_at')"  # noqa: S608
            ).fetchone()
            hold = _hold(next_send_at, now, interval)
            if hold or not pending:
                return Claim([], hold, pending)
            chosen = [seq for (seq,) in reader.execute(_SENDABLE, {"now": now, "limit": limit, "owner": owner})]
        if not chosen:
            return Claim([], 0.0, pending)
        return self._take(chosen, owner, now, interval, pending)

    def _take(self, chosen: list[int], owner: str, now: float, interval: float | None, pending: int) -> Claim:
        """Claim the events found, in a short write transaction: those another process took since are left out,
        and nothing is taken if another process took the next sending slot meanwhile."""
        seqs = json.dumps(chosen)
        with self.lock, self.transaction():
            connection = self.connection
            (next_send_at,) = connection.execute("SELECT value FROM counters WHERE name = 'next_send_at'").fetchone()
            hold = _hold(next_send_at, now, interval)
            if hold:
                return Claim([], hold, pending)
            connection.execute(
                "UPDATE events SET claim_owner = :owner, claim_expires = :expires "
                "WHERE seq IN (SELECT value FROM json_each(:seqs)) AND state = 'pending' "
                "AND (claim_expires IS NULL OR claim_expires <= :now OR claim_owner = :owner)",
                {"owner": owner, "expires": now + LEASE, "seqs": seqs, "now": now},
            )
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM events WHERE seq IN (SELECT value FROM json_each(?)) "  # noqa: S608
                "AND claim_owner = ? AND claim_expires = ? ORDER BY seq",
                (seqs, owner, now + LEASE),
            ).fetchall()
            if rows and interval is not None:
                connection.execute(
                    "UPDATE counters SET value = ? WHERE name = 'next_send_at'", (now + interval * len(rows),)
                )
            return Claim([StoredEvent(*row) for row in rows], 0.0, pending)

    def delivered(self, events: list[StoredEvent], now: float) -> None:
        """Move claimed events to `delivered` (one transaction): their bodies go, their keys and fingerprints stay
        for `DELIVERED_MEMORY`."""
        prints = [fingerprint(event.kind, event.body) for event in events]
        with self.lock, self.transaction():
            connection = self.connection
            for event, print_ in zip(events, prints, strict=True):
                deleted = connection.execute("DELETE FROM events WHERE seq = ? AND state = 'pending'", (event.seq,))
                if deleted.rowcount:
                    connection.execute(
                        "INSERT OR IGNORE INTO delivered VALUES (?, ?, ?, ?)",
                        (event.idempotency_key, event.seq, print_, now),
                    )

    def failed(self, event: StoredEvent, result: dict[str, Any], *, attempted: bool) -> None:
        """Move a claimed event to failed with its last result."""
        with self.lock:
            self.connection.execute(
                "UPDATE events SET state = 'failed', result = ?, attempts = attempts + ?, "
                "claim_owner = NULL, claim_expires = NULL WHERE seq = ? AND state = 'pending'",
                (json.dumps(result), int(attempted), event.seq),
            )

    def retry_later(self, event: StoredEvent, result: dict[str, Any], not_before: float, hold_until: float) -> None:
        """Keep a claimed event pending, sendable from `not_before`; no process sends anything before
        `hold_until` (the server's Retry-After, or the backoff of an outage)."""
        with self.lock, self.transaction():
            self.connection.execute(
                "UPDATE events SET attempts = attempts + 1, not_before = ?, result = ?, "
                "claim_owner = NULL, claim_expires = NULL WHERE seq = ? AND state = 'pending'",
                (not_before, json.dumps(result), event.seq),
            )
            self.connection.execute(
                "UPDATE counters SET value = max(value, ?) WHERE name = 'next_send_at'", (hold_until,)
            )

    def release(self, events: list[StoredEvent]) -> None:
        """Give up claims without sending (a pause, a stop)."""
        if events:
            with self.lock:
                self.connection.execute(
                    "UPDATE events SET claim_owner = NULL, claim_expires = NULL "
                    "WHERE seq IN (SELECT value FROM json_each(?)) AND state = 'pending'",
                    (json.dumps([event.seq for event in events]),),
                )

    def release_owner(self, owner: str, *, keep: int | None = None) -> None:
        """Give up every claim of `owner`, but that of the event `keep` (one on the wire)."""
        with self.lock:
            self.connection.execute(
                "UPDATE events SET claim_owner = NULL, claim_expires = NULL WHERE claim_owner = ? AND seq IS NOT ?",
                (owner, keep),
            )

    def release_dead_owners(self, now: float) -> int:
        """Free the claims of processes of this host that died (kill -9, OOM) without waiting for their lease."""
        with self.lock:
            owners = [
                owner
                for (owner,) in self.connection.execute(
                    "SELECT DISTINCT claim_owner FROM events WHERE state = 'pending' AND claim_expires > ?", (now,)
                )
            ]
            dead = [owner for owner in owners if _is_dead(owner)]
            for owner in dead:
                self.connection.execute(
                    "UPDATE events SET claim_owner = NULL, claim_expires = NULL WHERE claim_owner = ?", (owner,)
                )
            return len(dead)

    def forget_deliveries(self, before: float) -> None:
        """Delete the rows of events delivered before `before`, a batch per transaction."""
        while True:
            with self.lock:
                cursor = self.connection.execute(
                    "DELETE FROM delivered WHERE idempotency_key IN "
                    "(SELECT idempotency_key FROM delivered WHERE done_at < ? LIMIT 5000)",
                    (before,),
                )
            if cursor.rowcount < 5000:
                return

    # -- inspection and maintenance -----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """pending, failed, delivered (ever) in the whole file."""
        with self.lock:
            pending, failed, delivered = self.connection.execute(
                f"SELECT {_PENDING}, (SELECT value FROM counters WHERE name = 'failed'), "  # noqa: S608
                "(SELECT value FROM counters WHERE name = 'delivered')"
            ).fetchone()
        return {"pending": int(pending), "failed": int(failed), "delivered": int(delivered)}

    def last_seq(self) -> int:
        with self.lock:
            row = self.connection.execute(f"SELECT {_LAST_SEQ}").fetchone()
        return int(row[0])

    def pending_through(self, seq: int) -> bool:
        """Whether any event up to `seq` is still pending."""
        with self.lock:
            row = self.connection.execute(
                "SELECT EXISTS (SELECT 1 FROM events WHERE state = 'pending' AND seq <= ?)", (seq,)
            ).fetchone()
        return bool(row[0])

    def failed_events(self) -> list[StoredEvent]:
        with self.lock:
            rows = self.connection.execute(
                f"SELECT {_COLUMNS} FROM events WHERE state = 'failed' ORDER BY seq"  # noqa: S608
            ).fetchall()
        return [StoredEvent(*row) for row in rows]

    def retry_failed(self) -> int:
        """Move every failed event back to pending, to be sent as soon as possible."""
        with self.lock:
            return self.connection.execute(
                "UPDATE events SET state = 'pending', attempts = 0, not_before = 0 WHERE state = 'failed'"
            ).rowcount

    def purge_failed(self) -> int:
        """Delete every failed event (their keys are forgotten too)."""
        with self.lock:
            return self.connection.execute("DELETE FROM events WHERE state = 'failed'").rowcount

    def close(self) -> None:
        with self.reader_lock:
            if self._reader is not None:
                self._reader.close()
        with self.lock:
            self.connection.close()


class _Transaction:
    """A write transaction; inside one already open (`Outbox._batch`), a savepoint in it."""

    __slots__ = ("_connection", "_nested")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._nested = False

    def __enter__(self) -> None:
        self._nested = self._connection.in_transaction
        self._connection.execute("SAVEPOINT nested" if self._nested else "BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: object) -> None:
        if self._nested:
            if exc_type is not None:
                self._connection.execute("ROLLBACK TO nested")
            self._connection.execute("RELEASE nested")
        elif exc_type is None:
            self._connection.execute("COMMIT")
        elif self._connection.in_transaction:
            self._connection.execute("ROLLBACK")


def _hold(next_send_at: float, now: float, interval: float | None) -> float:
    """Seconds until any process may send again (0: now). A wait longer than any an outbox asks for is a
    wall-clock jump backwards, and ignored."""
    hold = next_send_at - now
    return hold if 0 < hold <= max(1000.0, 2 * (interval or 0)) else 0.0


def _statements(script: str) -> list[str]:
    """The statements of a script, to run inside a transaction (`executescript` would commit it first)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current)
            current = ""
    return statements


def _create_owner_only(path: str) -> None:
    """Create the file (and missing folders) if it does not exist: readable by its owner only, since events hold
    customer details. An existing file keeps its permissions; a symlink's target is what is created."""
    path = os.path.realpath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)
