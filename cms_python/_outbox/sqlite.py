"""The outbox's SQLite store: a file (or ":memory:"), its schema, and every read and write of it, each in one
transaction.

One `SQLiteStore` is one connection, shared by the threads of one `Outbox` under `lock`, and, for a file, a second
one for the delivery thread, under `reader_lock`: with it the thread looks for events to send and checkpoints
the WAL without holding up an enqueue (WAL readers never block the writer). Several processes may open the same
file: SQLite's locks make each transaction atomic across them, and an event is sent only by the
holder of its claim (`claim_owner` until `claim_expires`).

`events` holds the `pending` events (to send) and the `failed` ones (a permanent refusal, or expired; kept until
retried or purged). A delivered event leaves it for `delivered`, which keeps its idempotency key and a
fingerprint of its content for `DELIVERED_MEMORY`, so that the same event queued again is recognised.
`heads` holds the oldest pending event of each customer, the only one of its customer that may be sent: a claim
reads it in `seq` order, so its cost does not grow with a customer's backlog. Triggers keep it, and every count
(in `counters`), as events come and go. `counters` also holds `next_send_at`, the earliest time any process may
send again (pacing, and the wait a 429 or an outage asks for), and `hold_length`, how long that wait was when it
was set: a wait found longer than that was set before the wall clock went back, and is cut to it. `seq` numbers
never come back: an event takes the highest `seq` ever given (the table's highest, or `counters.high_water` once
that row left) plus one, so it also counts every event ever queued.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, Literal, NamedTuple, ParamSpec, TypeVar

from .._canonical import canonical_json, content_hash
from .store import (
    DELIVERED_MEMORY,
    LEASE,
    LONGEST_WAIT,
    Claim,
    Full,
    KeyReused,
    NewEvent,
    StorageError,
    StoredEvent,
    SystemClock,
    Through,
    is_dead,
)

#: "CMSo" in the header's application_id field: tells an outbox from any other SQLite file.
APPLICATION_ID = 0x434D536F
#: The schema written here (PRAGMA user_version); a file with a higher one is from a newer SDK and refused, one
#: with a lower one is brought up to this one when opened.
SCHEMA_VERSION = 2
#: The SQLite the schema needs (iif() in its triggers, the pragma functions, json_each).
OLDEST_SQLITE = (3, 32, 0)
#: How long a transaction waits for another process's to end before the operation fails.
BUSY_TIMEOUT = 10.0
#: WAL pages past which a commit checkpoints by itself: only when no delivery thread has done it (each does, every
#: second), as a checkpoint costs an fsync.
AUTOCHECKPOINT_PAGES = 10_000
#: Events chained to their customers' per transaction (`_promote`, `retry_failed`): the write lock is held about
#: 0.1 s for each batch, and other processes' transactions go between batches.
CHAIN_BATCH = 5000
#: Seconds a folder must be seen unchanged, by this process's own clock, before its times are trusted to move at its
#: next change (some filesystems keep whole seconds, or two; the kernel stamps with a clock read every few
#: milliseconds; a network filesystem with another machine's clock): from then on, `check_in_place` looks at the
#: outbox's folder only, while it stays as it was.
SETTLED = 3.0
#: How often the delivery thread checkpoints the WAL, and forgets old deliveries.
CHECKPOINT_EVERY = 1.0
FORGET_EVERY = 3600.0
MEMORY = ":memory:"

_EVENTS = """
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
# Version 2: each event's content hash, stored at enqueue (filled in for version 1's events by `_fill_fingerprints`);
# each customer's pending events as a chain (`heads`: its first, which may be sent, and its last; `next_seq`), built
# by the delivery thread (`_promote`) rather than at each enqueue, which then writes the row and its key only; the
# length of the last hold; how far the chains were built.
_V2 = """
ALTER TABLE events ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN next_seq INTEGER;
DROP INDEX pending_by_customer;
CREATE TABLE heads (customer TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, tail INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO counters VALUES ('hold_length', 0.0), ('promoted_through', 0);
"""
_MIGRATIONS = {0: _EVENTS + _V2, 1: _V2}
# The highest seq ever given; pending events: every event ever queued less those that left `pending`.
_LAST_SEQ = """
max(coalesce((SELECT max(seq) FROM events), 0), (SELECT value FROM counters WHERE name = 'high_water'))
"""
_PENDING = f"{_LAST_SEQ} - (SELECT value FROM counters WHERE name = 'left_pending')"  # noqa: S608
_ENQUEUE = f"""
INSERT INTO events (seq, kind, idempotency_key, customer, body, fingerprint, stamped_at, queued_at)
SELECT {_LAST_SEQ} + 1, ?1, ?2, ?3, ?4, ?5, ?6, ?7
WHERE {_PENDING} < ?8
  AND NOT EXISTS (SELECT 1 FROM events WHERE idempotency_key = ?2)
  AND NOT EXISTS (SELECT 1 FROM delivered WHERE idempotency_key = ?2)
"""  # noqa: S608 - constant text
_COLUMNS = "seq, kind, idempotency_key, body, fingerprint, stamped_at, queued_at, attempts, result"
# Only heads can be sent: the scan skips, at most, the heads that wait for a retry or are claimed by another
# process, however long each customer's backlog. CROSS JOIN keeps `heads` (in seq order) the outer loop.
_SENDABLE = f"""
SELECT e.seq FROM heads AS h CROSS JOIN events AS e ON e.seq = h.seq
WHERE (e.not_before <= :now OR e.not_before > :now + {LONGEST_WAIT})
  AND (e.claim_expires IS NULL OR e.claim_expires <= :now OR e.claim_owner = :owner)
ORDER BY h.seq LIMIT :limit
"""  # noqa: S608 - constant text
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _storage(method: Callable[Concatenate[SQLiteStore, _P], _R]) -> Callable[Concatenate[SQLiteStore, _P], _R]:
    """`method`, raising `StorageError` for what SQLite raises: the rest of the outbox never sees `sqlite3`."""

    @functools.wraps(method)
    def guarded(self: SQLiteStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise StorageError(str(exc)) from exc

    return guarded


class SQLiteStore:
    """The outbox file (or an in-memory database), opened, checked and ready: a `Store`. `lease`: seconds a claim
    lasts.

    Raises `ValueError` (naming the path) when the file is not an outbox, is corrupt, or was written by a newer
    SDK; `OSError` when it cannot be created or opened, or when Python's SQLite is older than `OLDEST_SQLITE`. Its
    methods raise `StorageError` when storage fails.
    """

    def __init__(self, path: str, durability: Literal["process", "power"] = "process", *, lease: float = LEASE) -> None:
        if sqlite3.sqlite_version_info < OLDEST_SQLITE:
            raise OSError(
                f"The outbox needs SQLite {'.'.join(map(str, OLDEST_SQLITE))} or newer; this Python has "
                f"{sqlite3.sqlite_version}. Use a Python built with a newer SQLite, or a postgresql:// target."
            )
        self.label = path
        # Absolute: SQLite resolves the path once, at connect; the checks and the connections opened later (the
        # delivery thread's, a forked child's) must name the same file after the process changes directory.
        self.path = path if path == MEMORY else os.path.abspath(path)
        self.lease = lease
        self.clock = SystemClock()
        # Reentrant: `enqueue_many` holds it around many enqueues, which take it too.
        self.lock = threading.RLock()
        #: Held while using the delivery thread's connection: like `lock`, taken by the fork handler, so that no
        #: thread is inside SQLite then.
        self.reader_lock = threading.Lock()
        self.locks = (self.reader_lock, self.lock)  # in the order the delivery thread takes them
        self._reader: sqlite3.Connection | None = None
        self._last_checkpoint = time.monotonic()
        self._last_forget = -FORGET_EVERY
        self._durability = durability
        #: The files SQLite keeps the outbox in (the log and its index beside the database, past symbolic links)
        #: and their device and inode when opened; none for ":memory:".
        self._files: tuple[str, ...] = ()
        self._identity: list[tuple[int, int] | None] = []
        #: The folder holding them, when the path goes through no symbolic link; the state passing full checks
        #: have seen it in since when (monotonic); that state once seen for `SETTLED` (see `check_in_place`).
        self._folder: str | None = None
        self._seen: tuple[_FolderState | None, float] = (None, 0.0)
        self._settled: _FolderState | None = None
        if path == MEMORY:
            self.connection = sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)
            for statement in _statements(_MIGRATIONS[0]):
                self.connection.execute(statement)
            self._set_identity()
            return
        _create_owner_only(self.path)
        try:
            self.connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
            )
        except sqlite3.Error as exc:
            raise OSError(f"Cannot open the outbox {path}: {exc}") from None
        try:
            self._open(durability)
            real = os.path.realpath(self.path)
            self._files = (self.path, real + "-wal", real + "-shm")
            self._identity = [_file_identity(file) for file in self._files]
            if real == self.path:  # a link anywhere on the way could be changed without changing the folder
                self._folder = os.path.dirname(real)
        except BaseException:
            self.connection.close()
            raise

    def _open(self, durability: str) -> None:
        try:
            # Before anything is written: a file that is not an outbox is left untouched.
            up_to_date = self._check() == SCHEMA_VERSION
            self._switch_to_wal()
            self._tune(self.connection)
            if not up_to_date:  # an outbox in use is opened without the write lock
                self._set_up()
            self.connection.execute("SELECT value FROM counters").fetchall()
        except sqlite3.OperationalError as exc:
            raise OSError(f"Cannot open the outbox {self.label}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
            raise ValueError(
                f"{self.label} is not a readable CutMeShort outbox ({exc}); it was left as it is. "
                "Move it away to start a new outbox: the events in it may still be recoverable."
            ) from None

    def _set_up(self) -> None:
        """Create the tables of a new file, or bring an older file's up to `SCHEMA_VERSION`."""
        with self.transaction():
            version = self._check()  # checked again, under the write lock: another process may have done it
            if version < SCHEMA_VERSION:
                for statement in _statements(_MIGRATIONS[version]):
                    self.connection.execute(statement)
                self._fill_fingerprints()
                self._promote()
                self._set_identity()

    def _switch_to_wal(self) -> None:
        """WAL: a commit appends to the log, and readers never block the writer.

        The switch of a new file upgrades a read lock to a write lock, which SQLite refuses at once, without the
        busy timeout, while another connection holds the write lock: another process setting up the same new file
        meanwhile. Tried again until `BUSY_TIMEOUT`; once the file is in WAL, the switch takes no lock."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                self.connection.execute("PRAGMA journal_mode = WAL").fetchall()
                return
            except sqlite3.OperationalError as exc:
                if str(exc) != "database is locked" or time.monotonic() >= deadline:  # SQLITE_BUSY, on 3.10 too
                    raise
            time.sleep(0.005)

    def _fill_fingerprints(self) -> None:
        """In the migration from version 1: the content hash of each event stored without one."""
        rows = self.connection.execute("SELECT seq, kind, body FROM events WHERE fingerprint = ''").fetchall()
        self.connection.executemany(
            "UPDATE events SET fingerprint = ? WHERE seq = ?",
            [(content_hash(kind, canonical_json(json.loads(body))), seq) for seq, kind, body in rows],
        )

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

    @_storage
    def maintain(self, now: float) -> None:
        """Every `CHECKPOINT_EVERY` seconds, copy the WAL into the database (PASSIVE: never waits for, nor blocks,
        the other connections), on the delivery thread's connection, so that enqueues go on meanwhile; every
        `FORGET_EVERY`, forget old deliveries."""
        if now - self._last_forget >= FORGET_EVERY:
            self._forget_deliveries(now - DELIVERED_MEMORY)
            self._last_forget = now
        if self.path != MEMORY and time.monotonic() - self._last_checkpoint >= CHECKPOINT_EVERY:  # about the disk
            with self.reader_lock:
                self._reading().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self._last_checkpoint = time.monotonic()

    def _check(self) -> int:
        """The file's schema version (0: an empty file, a new outbox); `ValueError` for a file this SDK cannot
        read."""
        # One statement, so one snapshot: read apart, they may straddle another process setting the file up.
        application_id, version, objects = self.connection.execute(
            "SELECT (SELECT application_id FROM pragma_application_id), "
            "(SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_master)"
        ).fetchone()
        if application_id == 0 and version == 0 and objects == 0:
            return 0
        if application_id != APPLICATION_ID:
            raise ValueError(
                f"{self.label} is an SQLite database but not a CutMeShort outbox; it was left as it is. "
                "Give the Outbox a path of its own."
            )
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"{self.label} is an outbox written by a newer cms-python-client (schema version {version}; this "
                f"one reads up to {SCHEMA_VERSION}). Upgrade cms-python-client to deliver its events."
            )
        return int(version)

    def _set_identity(self) -> None:
        self.connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        self.connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def transaction(self) -> _Transaction:
        """`with store.transaction():` a write transaction (BEGIN IMMEDIATE), committed or rolled back."""
        return _Transaction(self)

    def through(self, connection: object) -> Through:
        raise ValueError(
            "within() joins the app's transaction in the outbox's database: this Outbox keeps its events in a file. "
            "Give it a postgresql:// URL."
        )

    @_storage
    def enqueue_many(
        self, events: Sequence[NewEvent], *, now: float, max_pending: int
    ) -> list[tuple[str, bool] | Full | KeyReused]:
        """`Store.enqueue_many`: `StorageError` also when the file was moved meanwhile (nothing of it is then
        where the next `Outbox` on the path looks)."""
        outcomes: list[tuple[str, bool] | Full | KeyReused] = []
        rows = [(*_row(event), now, max_pending) for event in events]
        with self.lock:
            self.check_in_place()
            with self.transaction():
                connection = self.connection
                (last,) = connection.execute(f"SELECT {_LAST_SEQ}").fetchone()
                # One statement run for every row, in SQLite's own loop; then which rows it stored, by key.
                connection.executemany(_ENQUEUE, rows)
                stored = dict(connection.execute("SELECT idempotency_key, seq FROM events WHERE seq > ?", (last,)))
                for event, values in zip(events, rows, strict=True):
                    seq = stored.pop(event.key, None)  # a key twice in the batch: its second is a duplicate
                    if seq is not None:
                        outcomes.append((str(seq), False))
                        continue
                    try:
                        outcomes.append(self._not_inserted(event, values))
                    except (Full, KeyReused) as refusal:
                        outcomes.append(refusal)
            self.check_in_place()
        return outcomes

    def check_in_place(self) -> None:
        """`StorageError` unless the path still names the file this store has open, and its -wal and -shm are
        still the ones SQLite has open: once the file is moved or deleted, what is written to it is where the next
        `Outbox` on the path never looks; a deleted -wal takes what it holds with this process (kill -9), and
        without its -shm the next process on the path builds another index of the log, blind to this one's."""
        # Moving or deleting a file changes its folder's times. Once full checks `SETTLED` apart have passed and
        # seen the folder in one state, and while it stays in it, no file in it can have moved: one `stat` instead
        # of three. (A mount over one of the files, made while it is open, needs root and changes no folder.)
        folder = None if self._folder is None else _folder_state(self._folder)
        if folder is not None and folder == self._settled:
            return
        if [_file_identity(file) for file in self._files] != self._identity:
            raise StorageError(
                f"{self.label} no longer names the outbox's file (it, or its -wal or -shm, was moved or deleted "
                "while open): nothing more is stored in it. Start a new Outbox on the path; events already in the "
                "moved file are delivered by an Outbox opened on it."
            )
        if folder is None:
            return
        seen, since = self._seen
        now = time.monotonic()
        if folder != seen:
            self._seen = (folder, now)
        elif now - since >= SETTLED:  # any later change is stamped at least that much later: its times differ
            self._settled = folder

    # -- enqueue ------------------------------------------------------------------------------------------------

    @_storage
    def enqueue(self, event: NewEvent, *, now: float, max_pending: int) -> tuple[str, bool]:
        """Store a pending event in one statement (its own transaction): `(event_id, duplicate)`.

        An event with the same key and content already stored gives its id and `duplicate` True. Raises `Full`,
        `KeyReused`, or `StorageError` (storage failure, or the file was moved: see `check_in_place`).
        """
        values = (*_row(event), now, max_pending)
        with self.lock:
            cursor = self.connection.execute(_ENQUEUE, values)
            found = (str(cursor.lastrowid), False) if cursor.rowcount == 1 else self._not_inserted(event, values)
            # After the write: a file moved at any moment before it returned may hold the event.
            self.check_in_place()
            return found

    def _not_inserted(self, event: NewEvent, values: tuple[Any, ...]) -> tuple[str, bool]:
        with self.transaction():
            connection = self.connection
            found = connection.execute(
                "SELECT seq, fingerprint FROM events WHERE idempotency_key = ?1 "
                "UNION ALL SELECT seq, fingerprint FROM delivered WHERE idempotency_key = ?1",
                (event.key,),
            ).fetchone()
            if found is None:
                # The outbox was full when the statement ran; a delivery may have made room since.
                cursor = connection.execute(_ENQUEUE, values)
                if cursor.rowcount != 1:
                    raise Full
                return str(cursor.lastrowid), False
            seq, known = found
            if known != event.fingerprint:
                raise KeyReused(str(seq))
            return str(seq), True

    # -- delivery -----------------------------------------------------------------------------------------------

    @_storage
    def claim(self, owner: str, now: float, limit: int, interval: float | None) -> Claim:
        """`Store.claim`: the events queued since the last claim are chained to their customers' first (in a write
        transaction, only if there are any); a read on the delivery thread's connection finds the events to send,
        a short write transaction takes them."""
        with self.lock:
            unchained = self.connection.execute(
                "SELECT coalesce((SELECT max(seq) FROM events), 0) > "
                "(SELECT value FROM counters WHERE name = 'promoted_through')"
            ).fetchone()[0]
            if unchained:
                with self.transaction():
                    self._promote()
        with self.reader_lock, self.lock if self.path == MEMORY else contextlib.nullcontext():
            # Looking is a read, on the delivery thread's connection, so that enqueues go on meanwhile.
            reader = self._reading()
            pending, next_send_at, hold_length = reader.execute(
                f"SELECT {_PENDING}, "  # noqa: S608
                "(SELECT value FROM counters WHERE name = 'next_send_at'), "
                "(SELECT value FROM counters WHERE name = 'hold_length')"
            ).fetchone()
            if next_send_at - now > hold_length:
                return self._clock_went_back(now, hold_length, bool(pending))
            hold = max(next_send_at - now, 0.0)
            if hold or not pending:
                return Claim([], hold, bool(pending))
            chosen = [seq for (seq,) in reader.execute(_SENDABLE, {"now": now, "limit": limit, "owner": owner})]
        if not chosen:
            return Claim([], 0.0, True)
        return self._take(chosen, owner, now, interval)

    def _clock_went_back(self, now: float, hold_length: float, pending: bool) -> Claim:
        """The pace asks for a longer wait than it was set with: the wall clock went back since. Wait what it was
        set with, from now."""
        with self.lock:
            self.connection.execute("UPDATE counters SET value = ? WHERE name = 'next_send_at'", (now + hold_length,))
        return Claim([], hold_length, pending)

    def _take(self, chosen: list[int], owner: str, now: float, interval: float | None) -> Claim:
        """Claim the events found, in a short write transaction: those another process took since are left out,
        and nothing is taken if another process took the next sending slot meanwhile."""
        seqs = json.dumps(chosen)
        expires = now + self.lease
        with self.lock, self.transaction():
            connection = self.connection
            (next_send_at,) = connection.execute("SELECT value FROM counters WHERE name = 'next_send_at'").fetchone()
            if next_send_at > now:
                return Claim([], next_send_at - now, True)
            connection.execute(
                "UPDATE events SET claim_owner = :owner, claim_expires = :expires "
                "WHERE seq IN (SELECT value FROM json_each(:seqs)) AND state = 'pending' "
                "AND (claim_expires IS NULL OR claim_expires <= :now OR claim_owner = :owner)",
                {"owner": owner, "expires": expires, "seqs": seqs, "now": now},
            )
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM events WHERE seq IN (SELECT value FROM json_each(?)) "  # noqa: S608
                "AND claim_owner = ? AND claim_expires = ? ORDER BY seq",
                (seqs, owner, expires),
            ).fetchall()
            if rows and interval is not None:
                self._hold_until(now, now + interval * len(rows))
            return Claim([StoredEvent(*row) for row in rows], 0.0, True, expires)

    def _hold_until(self, now: float, until: float) -> None:
        """In a transaction: no process sends before `until` (or the later time already set)."""
        connection = self.connection
        (next_send_at,) = connection.execute("SELECT value FROM counters WHERE name = 'next_send_at'").fetchone()
        if until > next_send_at:
            connection.executemany(
                "UPDATE counters SET value = ? WHERE name = ?",
                ((until, "next_send_at"), (until - now, "hold_length")),
            )

    @_storage
    def renew(self, owner: str, events: list[StoredEvent], now: float) -> tuple[list[StoredEvent], float]:
        """Extend `owner`'s claims on `events` to `lease` seconds from `now`: the events still held (a claim that
        lapsed may have been taken over: those must not be sent), and the new expiry."""
        expires = now + self.lease
        seqs = json.dumps([event.seq for event in events])
        with self.lock, self.transaction():
            self.connection.execute(
                "UPDATE events SET claim_expires = ? WHERE seq IN (SELECT value FROM json_each(?)) "
                "AND claim_owner = ? AND state = 'pending'",
                (expires, seqs, owner),
            )
            held = {
                seq
                for (seq,) in self.connection.execute(
                    "SELECT seq FROM events WHERE seq IN (SELECT value FROM json_each(?)) AND claim_owner = ? "
                    "AND claim_expires = ?",
                    (seqs, owner, expires),
                )
            }
        return [event for event in events if event.seq in held], expires

    @_storage
    def delivered(self, events: list[StoredEvent], now: float) -> float:
        """Move claimed events to `delivered` (one transaction): their bodies go, their keys and fingerprints stay
        for `DELIVERED_MEMORY`."""
        with self.lock, self.transaction():
            connection = self.connection
            for event in events:
                if self._unchain(event.seq):
                    connection.execute("DELETE FROM events WHERE seq = ?", (event.seq,))
                    connection.execute(
                        "INSERT OR IGNORE INTO delivered VALUES (?, ?, ?, ?)",
                        (event.idempotency_key, event.seq, event.fingerprint, now),
                    )
            return self._hold_at(now)

    def _unchain(self, seq: int) -> bool:
        """In a transaction, before the pending event `seq` (its customer's head: only heads are claimed) leaves
        `pending`: the next one of its customer becomes the head. False if it is no longer pending."""
        row = self.connection.execute(
            "SELECT customer, next_seq FROM events WHERE seq = ? AND state = 'pending'", (seq,)
        ).fetchone()
        if row is None:
            return False
        customer, following = row
        if following is None:
            self.connection.execute("DELETE FROM heads WHERE customer = ? AND seq = ?", (customer, seq))
        else:
            self.connection.execute(
                "UPDATE heads SET seq = ? WHERE customer = ? AND seq = ?", (following, customer, seq)
            )
        return True

    def _promote(self) -> int:
        """In a transaction: the events queued since the last time, each chained behind its customer's last pending
        one (or its customer's head), a batch at a time. A `seq` is given inside the write transaction, so events
        commit in `seq` order, and those past `promoted_through` are exactly the ones not chained yet."""
        connection = self.connection
        (through,) = connection.execute("SELECT value FROM counters WHERE name = 'promoted_through'").fetchone()
        rows = connection.execute(
            "SELECT seq, customer FROM events WHERE seq > ? AND state = 'pending' ORDER BY seq LIMIT ?",
            (through, CHAIN_BATCH),
        ).fetchall()
        for seq, customer in rows:
            self._chain(seq, customer)
        if rows:
            connection.execute("UPDATE counters SET value = ? WHERE name = 'promoted_through'", (rows[-1][0],))
        return len(rows)

    def _chain(self, seq: int, customer: str) -> None:
        """In a transaction: the pending event `seq` at the end of its customer's chain."""
        connection = self.connection
        found = connection.execute("SELECT tail FROM heads WHERE customer = ?", (customer,)).fetchone()
        if found is None:
            connection.execute("INSERT INTO heads VALUES (?, ?, ?)", (customer, seq, seq))
        else:
            connection.execute("UPDATE events SET next_seq = ? WHERE seq = ?", (seq, found[0]))
            connection.execute("UPDATE heads SET tail = ? WHERE customer = ?", (seq, customer))

    @_storage
    def failed(self, event: StoredEvent, result: dict[str, Any], *, attempted: bool, now: float) -> float:
        """Move a claimed event to failed with its last result."""
        with self.lock, self.transaction():
            if self._unchain(event.seq):
                self.connection.execute(
                    "UPDATE events SET state = 'failed', result = ?, attempts = attempts + ?, "
                    "claim_owner = NULL, claim_expires = NULL WHERE seq = ?",
                    (json.dumps(result), int(attempted), event.seq),
                )
            return self._hold_at(now)

    def _hold_at(self, now: float) -> float:
        """In a transaction: seconds until any process may send again (at most the length the wait was set with)."""
        next_send_at, hold_length = self.connection.execute(
            "SELECT (SELECT value FROM counters WHERE name = 'next_send_at'), "
            "(SELECT value FROM counters WHERE name = 'hold_length')"
        ).fetchone()
        return float(min(max(next_send_at - now, 0.0), hold_length))

    @_storage
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
        with self.lock, self.transaction():
            self.connection.execute(
                "UPDATE events SET attempts = attempts + 1, not_before = ?, result = ?, "
                "claim_owner = NULL, claim_expires = NULL WHERE seq = ? AND state = 'pending' AND claim_owner = ?",
                (not_before, json.dumps(result), event.seq, owner),
            )
            self._hold_until(now, hold_until)

    @_storage
    def release(self, owner: str, events: list[StoredEvent]) -> None:
        if events:
            with self.lock:
                self.connection.execute(
                    "UPDATE events SET claim_owner = NULL, claim_expires = NULL "
                    "WHERE seq IN (SELECT value FROM json_each(?)) AND state = 'pending' AND claim_owner = ?",
                    (json.dumps([event.seq for event in events]), owner),
                )

    @_storage
    def release_owner(self, owner: str, *, keep: int | None = None) -> None:
        """Give up every claim of `owner`, but that of the event `keep` (one on the wire)."""
        with self.lock:
            self.connection.execute(
                "UPDATE events SET claim_owner = NULL, claim_expires = NULL WHERE claim_owner = ? AND seq IS NOT ?",
                (owner, keep),
            )

    @_storage
    def release_dead_owners(self, now: float) -> int:
        """Free the claims of processes of this host that died (kill -9, OOM) without waiting for their lease."""
        with self.lock:
            # Claims are on heads only: the heads bound what is looked at.
            owners = [
                owner
                for (owner,) in self.connection.execute(
                    "SELECT DISTINCT e.claim_owner FROM heads AS h CROSS JOIN events AS e ON e.seq = h.seq "
                    "WHERE e.claim_expires > ?",
                    (now,),
                )
            ]
            dead = [owner for owner in owners if is_dead(owner)]
            for owner in dead:
                self.connection.execute(
                    "UPDATE events SET claim_owner = NULL, claim_expires = NULL WHERE claim_owner = ?", (owner,)
                )
            return len(dead)

    def _forget_deliveries(self, before: float) -> None:
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

    @_storage
    def counts(self) -> dict[str, int]:
        """pending, failed, delivered (ever) in the whole file."""
        with self.lock:
            pending, failed, delivered = self.connection.execute(
                f"SELECT {_PENDING}, (SELECT value FROM counters WHERE name = 'failed'), "  # noqa: S608
                "(SELECT value FROM counters WHERE name = 'delivered')"
            ).fetchone()
        return {"pending": int(pending), "failed": int(failed), "delivered": int(delivered)}

    @_storage
    def last_seq(self) -> int:
        with self.lock:
            row = self.connection.execute(f"SELECT {_LAST_SEQ}").fetchone()
        return int(row[0])

    @_storage
    def pending_through(self, seq: int) -> bool:
        """Whether any event up to `seq` is still pending."""
        with self.lock:
            row = self.connection.execute(
                "SELECT EXISTS (SELECT 1 FROM events WHERE seq <= ? AND state = 'pending')", (seq,)
            ).fetchone()
        return bool(row[0])

    @_storage
    def failed_events(self) -> list[StoredEvent]:
        with self.lock:
            rows = self.connection.execute(
                f"SELECT {_COLUMNS} FROM events WHERE state = 'failed' ORDER BY seq"  # noqa: S608
            ).fetchall()
        return [StoredEvent(*row) for row in rows]

    @_storage
    def retry_failed(self) -> int:
        """Move every failed event back to pending, to be sent as soon as possible: each after its customer's
        pending events. In batches of `CHAIN_BATCH`, each its own transaction: a failure part-way leaves the
        earlier batches retried, and an event queued meanwhile may go before the later ones of its customer."""
        retried = 0
        through = 0  # each event once: one retried here may be sent and fail again before the last batch
        while True:
            with self.lock, self.transaction():
                if self._promote() == CHAIN_BATCH:  # first the events queued since the last claim, in batches
                    continue
                connection = self.connection
                failed = connection.execute(
                    "SELECT seq, customer FROM events WHERE state = 'failed' AND seq > ? ORDER BY seq LIMIT ?",
                    (through, CHAIN_BATCH),
                ).fetchall()
                connection.executemany(
                    "UPDATE events SET state = 'pending', attempts = 0, not_before = 0, next_seq = NULL WHERE seq = ?",
                    [(seq,) for seq, _ in failed],
                )
                for seq, customer in failed:
                    self._chain(seq, customer)
            if not failed:
                return retried
            retried += len(failed)
            through = failed[-1][0]

    @_storage
    def purge_failed(self) -> int:
        """Delete every failed event (their keys are forgotten too)."""
        with self.lock:
            return self.connection.execute("DELETE FROM events WHERE state = 'failed'").rowcount

    def forked(self) -> None:
        # SQLite keeps a file's locks per process, in memory: the child inherited that record, not the locks, and
        # while the record lasts no connection of the child's takes any (the parent's close, as the file's last
        # user, would delete the -wal and -shm under it). Closed now, while the parent has the file open and holds
        # its lock, these copies delete nothing.
        self.close()

    def reopened(self) -> SQLiteStore:
        # A ":memory:" queue starts empty: its events stay the parent's to deliver.
        return SQLiteStore(self.path, self._durability, lease=self.lease)

    def close(self) -> None:
        with self.reader_lock:
            if self._reader is not None:
                self._reader.close()
        with self.lock:
            self.connection.close()


class _Transaction:
    """A write transaction; inside one already open (`enqueue_many`), a savepoint in it."""

    __slots__ = ("_nested", "_store")

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._nested = False

    def __enter__(self) -> None:
        connection = self._store.connection
        self._nested = connection.in_transaction
        connection.execute("SAVEPOINT nested" if self._nested else "BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: object) -> None:
        connection = self._store.connection
        if self._nested:
            if exc_type is not None:
                connection.execute("ROLLBACK TO nested")
            connection.execute("RELEASE nested")
        elif exc_type is None:
            connection.execute("COMMIT")
        elif connection.in_transaction:
            connection.execute("ROLLBACK")


def _row(event: NewEvent) -> tuple[object, ...]:
    """The first values of `_ENQUEUE`, in its order."""
    return (event.kind, event.key, event.customer, event.body, event.fingerprint, event.stamped_at)


def _file_identity(path: str) -> tuple[int, int] | None:
    """The device and inode that `path` names now; None once nothing does."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"Cannot look at {path}: {exc}") from None
    return status.st_dev, status.st_ino


class _FolderState(NamedTuple):
    device: int
    inode: int
    #: Its modification and change times (ns): both set by every entry added, removed or renamed (on Windows,
    #: the first only; there the second is its creation); the second cannot be set back.
    modified: int
    changed: int


def _folder_state(path: str) -> _FolderState | None:
    """What `check_in_place` compares of a folder; None if it cannot be looked at (then the files are)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return _FolderState(status.st_dev, status.st_ino, status.st_mtime_ns, status.st_ctime_ns)


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
