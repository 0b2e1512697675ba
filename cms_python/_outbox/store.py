"""What the outbox asks of a store: the `Store` protocol, the values it hands back, and what both stores share.

A store keeps the events of one outbox target (an SQLite file, a PostgreSQL database) and every fact delivery needs
about them: which are pending, which failed and why, who holds a claim on which until when, when any process may
send again (pacing, and the waits a 429 or an outage asks for), and the keys of delivered events for
`DELIVERED_MEMORY`. Each method is one transaction. Times are seconds on the delivery's `Clock`, passed in, so that
every process using a target reads one time line (the store says which: `Store.clock`). Nothing here imports a
database driver: `sqlite3` is imported by the SQLite store only, `psycopg` by the PostgreSQL store only.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

#: How long the keys (and content fingerprints) of delivered events are remembered.
DELIVERED_MEMORY = 30 * 24 * 3600.0
#: How long a claim holds an event for its process unless the process renews it (before each attempt). A process
#: that exits or closes releases its claims at once, and one that died on this host is noticed; only a claim of a
#: process on another host (or before a reboot), or of one that hangs, runs this long.
LEASE = 60.0
#: The longest wait the outbox ever asks for (a backoff, a Retry-After honoured): an event due later than this was
#: scheduled before the clock went back, and is due now.
LONGEST_WAIT = 300.0


class StorageError(Exception):
    """The store failed: a file that cannot be read or written (disk full, read-only, moved away), a database that
    cannot be reached or refuses. The message says why, and never holds a secret."""


class Full(Exception):
    """`max_pending` events are pending."""


class KeyReused(Exception):
    """The idempotency key belongs to another stored event with different content."""

    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to store: its kind, idempotency key, customer (whose events go in order), request body (canonical
    JSON, without a timestamp the outbox stamped: that one is `stamped_at`, apart) and its content hash."""

    kind: Literal["lead", "sale"]
    key: str
    customer: str
    body: str
    fingerprint: str
    stamped_at: float | None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as stored: `body` is the request body (JSON text), `result` the last result dict (JSON)."""

    seq: int
    kind: Literal["lead", "sale"]
    idempotency_key: str
    body: str
    #: The content hash of its kind and body (`_canonical.content_hash`), stored at enqueue.
    fingerprint: str
    stamped_at: float | None
    queued_at: float
    attempts: int
    result: str | None

    @property
    def event_id(self) -> str:
        return str(self.seq)


@dataclass(frozen=True, slots=True)
class Claim:
    """What `Store.claim` found: events now held for the caller until `expires` (unless renewed); else `hold`
    seconds until any process may send again (0: not held), and whether any event is pending at all."""

    events: list[StoredEvent]
    hold: float
    pending: bool
    expires: float = 0.0


class Clock(Protocol):
    """Time as the delivery thread sees it (tests give a fake one)."""

    def now(self) -> float:
        """Seconds since the epoch, on the time line every process using the store shares."""

    def wait(self, wake: threading.Event, seconds: float) -> None:
        """Wait `seconds` for pacing or a backoff, or less if `wake` is set."""


class SystemClock:
    """This machine's wall clock: what processes sharing a file on it agree on."""

    def now(self) -> float:
        return time.time()

    def wait(self, wake: threading.Event, seconds: float) -> None:
        if wake.wait(seconds):
            wake.clear()


class Through(Protocol):
    """Writes events through the app's own database connection, in its current transaction (`Store.through`)."""

    def enqueue(self, event: NewEvent, *, now: float, max_pending: int) -> tuple[str, bool]:
        """As `Store.enqueue`, in the app's transaction: stored only if it commits."""

    def on_commit(self, callback: Callable[[], object]) -> None:
        """Call `callback` once the app's transaction commits, where the connection can tell (else never)."""


class Store(Protocol):
    """The outbox's storage. Every method raises `StorageError` when the storage fails."""

    @property
    def label(self) -> str:
        """What names the target in messages and logs: a path, or a URL without its password."""

    @property
    def lease(self) -> float:
        """Seconds a claim lasts unless renewed."""

    @property
    def clock(self) -> Clock:
        """The time line of this store (see `Clock`)."""

    @property
    def locks(self) -> tuple[Any, ...]:
        """Held, in this order, around every use of the store's connections: taken by the fork handler, so that
        no thread is inside a connection when the process forks."""

    def enqueue(self, event: NewEvent, *, now: float, max_pending: int) -> tuple[str, bool]:
        """Store a pending event: `(event_id, duplicate)`; the same key and content (`fingerprint`) already stored,
        or delivered within `DELIVERED_MEMORY`, give its id and `duplicate` True. Raises `Full`, `KeyReused`."""

    def through(self, connection: object) -> Through:
        """Enqueues written through the app's own `connection`, in its transactions. `TypeError` for a connection
        the store cannot write through; `ValueError` when the store cannot join an app's transaction."""

    def enqueue_many(
        self, events: Sequence[NewEvent], *, now: float, max_pending: int
    ) -> list[tuple[str, bool] | Full | KeyReused]:
        """Store `events` in one transaction (one commit; none is stored if it fails): for each, what `enqueue`
        returns, or the refusal it raises."""

    def claim(self, owner: str, now: float, limit: int, interval: float | None) -> Claim:
        """Hold up to `limit` sendable events for `owner` for `lease` seconds, unless sending must wait.

        Sendable: pending, not waiting for a retry, not held by another owner's live claim (the caller's own are
        stale: it claims only with nothing in flight), and the oldest pending event of its customer, so that a
        later event never overtakes an earlier one of its customer. Oldest first. `interval`: seconds between
        sends (pacing), shared by every process using the store: each claimed event takes the next slot.
        """

    def renew(self, owner: str, events: list[StoredEvent], now: float) -> tuple[list[StoredEvent], float]:
        """Extend `owner`'s claims on `events` to `lease` seconds from `now`: the events still held (a claim that
        lapsed may have been taken over: those must not be sent), and the new expiry."""

    def delivered(self, events: list[StoredEvent], now: float) -> float:
        """Record claimed events as delivered: their bodies go, their keys and fingerprints stay for
        `DELIVERED_MEMORY`. Returns the seconds until any process may send again (a 429 another process saw)."""

    def failed(self, event: StoredEvent, result: dict[str, Any], *, attempted: bool, now: float) -> float:
        """Record a claimed event as failed for good, with its last result; returns as `delivered` does."""

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
        """Keep an event `owner` claimed pending, sendable from `not_before`; no process sends anything before
        `hold_until` (the server's Retry-After, or the backoff of an outage)."""

    def release(self, owner: str, events: list[StoredEvent]) -> None:
        """Give up `owner`'s claims on `events` without sending (a pause, a stop); a claim that lapsed to another
        owner stays theirs."""

    def release_owner(self, owner: str, *, keep: int | None = None) -> None:
        """Give up every claim of `owner`, but that of the event `keep` (one on the wire)."""

    def release_dead_owners(self, now: float) -> int:
        """Free the claims of processes of this host that died (kill -9, OOM) without waiting for their lease;
        how many owners were dead."""

    def maintain(self, now: float) -> None:
        """Housekeeping between claims (the delivery thread calls it every cycle; the store decides how often to
        act): forget deliveries older than `DELIVERED_MEMORY`, and what else the store needs."""

    def counts(self) -> dict[str, int]:
        """`pending`, `failed`, `delivered` (ever) in the whole store."""

    def last_seq(self) -> int:
        """The highest event id given so far."""

    def pending_through(self, seq: int) -> bool:
        """Whether any event up to `seq` is still pending."""

    def failed_events(self) -> list[StoredEvent]:
        """The failed events, oldest first."""

    def retry_failed(self) -> int:
        """Make every failed event pending again, to be sent as soon as possible; how many."""

    def purge_failed(self) -> int:
        """Delete every failed event (their keys are forgotten too); how many."""

    def forked(self) -> None:
        """In a forked child, at once, while no other thread exists nor was inside the store at the fork: let go of
        what the child must not keep of the parent's connections."""

    def reopened(self) -> Store:
        """In a forked child, after `forked`: the same target through connections of the child's own."""

    def close(self) -> None:
        """Close the connections."""


#: The monotonic time the store calls of this thread must end by (`calls_end_by`), None for a store's own deadline.
_calls_end_by: contextvars.ContextVar[float | None] = contextvars.ContextVar("cms_outbox_calls_end_by", default=None)


@contextlib.contextmanager
def calls_end_by(deadline: float | None) -> Iterator[None]:
    """The store calls of this thread meanwhile end by `deadline` (monotonic; None: no sooner than they would), in
    a store that bounds its calls (a database's: `postgres.link`): what `Outbox.flush(timeout)` and `close()` wait
    for a store no longer than."""
    outer = _calls_end_by.get()
    token = _calls_end_by.set(min((each for each in (outer, deadline) if each is not None), default=None))
    try:
        yield
    finally:
        _calls_end_by.reset(token)


def call_deadline() -> float | None:
    """The time set by `calls_end_by` for this thread's store calls, None if none."""
    return _calls_end_by.get()


def token_scope(token: str) -> str:
    """What keeps the events (and the pace) of different API tokens apart in a store they share: 16 hex digits of
    a SHA-256 of the token, from which the token cannot be recovered."""
    return hashlib.sha256(f"cms-python-client outbox scope\n{token}".encode()).hexdigest()[:16]


def process_owner() -> str:
    """This process's claim owner: host (as of this boot, and PID namespace, for containers sharing a volume), PID,
    a nonce."""
    return f"{_host()}|{os.getpid()}|{os.urandom(6).hex()}"


def is_dead(owner: str) -> bool:
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


def _host() -> str:
    """This machine, as of this boot, and this PID namespace: a host name and a namespace's inode alone do not tell
    two machines apart (an image's host name; the first PID namespace has the same inode on every Linux machine)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
        with open("/proc/sys/kernel/random/boot_id") as boot_id:
            boot = boot_id.read().strip()
    except OSError:  # not Linux
        namespace, boot = 0, ""
    return f"{socket.gethostname()}:{namespace}:{boot}"
