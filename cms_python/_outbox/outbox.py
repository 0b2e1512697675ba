"""`Outbox`: tracking calls that return once the event is stored (a file, a database), delivered by a background
thread; `Within`: the same calls, written in the app's own database transaction."""

from __future__ import annotations

import atexit
import json
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec

from .._base import tracking_method
from .._canonical import canonical_json, content_hash
from .._client import CMSClient
from .._http import attempt_budget
from .._operations import TrackRequest
from .._printable import sdk_logger
from .._requests import build_lead, build_sale
from .._results import error
from .._types import TrackError, TrackQueued
from .delivery import POLL, RENEW_MARGIN, Delivery, FailedEvent, Outcome, Settings, failed_event
from .store import (
    LEASE,
    Full,
    KeyReused,
    NewEvent,
    StorageError,
    Store,
    SystemClock,
    Through,
    calls_end_by,
    process_owner,
    token_scope,
)
from .targets import is_database_url, label

__all__ = ["FailedEvent", "Outbox", "OutboxResult", "Within"]

logger = sdk_logger("cms_python")

_P = ParamSpec("_P")
OutboxResult = TrackQueued | TrackError

_TRACK_DOC = """Queue a {kind} for delivery: the same keyword arguments and checks as `CMSClient.track_{kind}`.

    Returns once the event is committed to the outbox's store: `{{"success": True, "message": "Event queued",
    "data": {{"event_id", "idempotency_key", "duplicate"}}}}`. The time (`timestamp`, now in UTC unless given) and
    the idempotency key are fixed now and sent with every attempt. An event already in the outbox under the same
    `idempotency_key` with the same content is not stored again (`duplicate` True, "Event already queued");
    with other content the result is an error of type `idempotency_key_reused`. Other errors, nothing stored:
    `validation_error` (bad values), `outbox_full` (`max_pending` events wait), `storage_error` (the store
    cannot be written: disk full, read-only, moved or deleted; a database that cannot be reached). Never raises,
    but `TypeError` for unknown or missing keyword names and `RuntimeError` after `close()`.
    """
_WITHIN_DOC = """Queue a {kind} in the app's current transaction: the same keyword arguments, checks and results as
    `Outbox.track_{kind}`.

    The event is written through the connection given to `within()`: delivery sees it once that transaction
    commits; a rollback leaves nothing. A `storage_error` here means the statement failed, and PostgreSQL then
    fails the whole transaction: roll it back.
    """


def _enqueuer(
    name: str, build: Callable[_P, TrackRequest[Any] | TrackError]
) -> Callable[Concatenate[Outbox, _P], OutboxResult]:
    def method(self: Outbox, /, *args: _P.args, **kwargs: _P.kwargs) -> OutboxResult:
        self._check_open()
        return self._enqueue(build(*args, **kwargs), None)

    doc = _TRACK_DOC.format(kind=name.removeprefix("track_"))
    return tracking_method(f"Outbox.{name}", build, method, doc=doc, returns="TrackQueued | TrackError")


def _joiner(
    name: str, build: Callable[_P, TrackRequest[Any] | TrackError]
) -> Callable[Concatenate[Within, _P], OutboxResult]:
    def method(self: Within, /, *args: _P.args, **kwargs: _P.kwargs) -> OutboxResult:
        self._outbox._check_open()
        return self._outbox._enqueue(build(*args, **kwargs), self._through)

    doc = _WITHIN_DOC.format(kind=name.removeprefix("track_"))
    return tracking_method(f"Within.{name}", build, method, doc=doc, returns="TrackQueued | TrackError")


class Outbox:
    """Background delivery from a durable queue: `track_lead` / `track_sale` store the event and return at once; a
    daemon thread delivers it, paced, retrying until the API gives a definitive answer. An acknowledged event
    survives a crash, a deploy or an outage: the next `Outbox` on the target delivers it.

    Args:
        target: where the queue is kept. A file path (created if missing, readable by its owner only; several
            processes of one machine may share it), `":memory:"` (a queue that lives as long as the process), or a
            `postgresql://` (or `postgres://`) URL: a database that every process of every machine with an
            `Outbox` on it shares, and where `within(connection)` joins the app's own transactions (the
            `postgres` extra). Another `scheme://` is a `ValueError`.
        token, host: as for `CMSClient(token, host)` (same environment variables, same `ValueError`s).
        client: a `CMSClient` to deliver through instead (then no token or host).
        rate_limit: requests per minute, spread evenly and shared by every process using the target with the same
            token (for a database: in its clock); None for no pacing. The API allows 60.
        max_pending: how many undelivered events the target may hold; past it, `track_*` returns `outbox_full`.
        max_age: seconds after which an undelivered event fails as `expired`; None: no limit.
        on_failure: called as `on_failure(event, result)` in the delivery thread when an event fails for good
            (a `FailedEvent` and its last result); what it raises is logged.
        flush_on_exit: at interpreter exit (and by default in `close()`), how many seconds to keep delivering.
        lease: seconds a claim on an event lasts unless its process renews it (it does before each attempt): the
            events of a process that hangs or dies on another host are taken over by another process after it,
            with the same idempotency key. Longer than one attempt may take (the client's timeouts added up).
        durability: a file's: `"process"` (the default): an acknowledged event survives the process being killed
            (kill -9, OOM); `"power"`: also a power loss or OS crash, at the cost of an fsync per event. Not for a
            database, where the commit decides.

    Raises `ValueError` for bad arguments and for a target that is not an outbox, is corrupt or was written by a
    newer version (the message names it, without a password; a file is left untouched), `OSError` when it cannot
    be created, opened or reached, `ImportError` for a database without the `postgres` extra installed.
    """

    track_lead = _enqueuer("track_lead", build_lead)
    track_sale = _enqueuer("track_sale", build_sale)

    def __init__(
        self,
        target: str | os.PathLike[str],
        token: str | None = None,
        host: str | None = None,
        *,
        client: CMSClient | None = None,
        rate_limit: float | None = 60,
        max_pending: int = 1_000_000,
        max_age: float | None = None,
        on_failure: Callable[[FailedEvent, TrackError], object] | None = None,
        flush_on_exit: float = 5.0,
        lease: float = LEASE,
        durability: Literal["process", "power"] | None = None,
    ) -> None:
        target = os.fspath(target)
        _check_settings(
            target,
            rate_limit=rate_limit,
            max_pending=max_pending,
            max_age=max_age,
            on_failure=on_failure,
            flush_on_exit=flush_on_exit,
            lease=lease,
            durability=durability,
        )
        if client is None:
            client = CMSClient(token, host)
            self._own_client = True
        elif not isinstance(client, CMSClient):
            raise TypeError(f"client must be a CMSClient, got {type(client).__name__}")
        elif token is not None or host is not None:
            raise ValueError("pass either client or token/host: the client already has its token and host")
        else:
            self._own_client = False
        budget = attempt_budget(client.timeout)
        if budget is None or lease < budget + 2 * RENEW_MARGIN:
            if self._own_client:
                client.close()
            raise ValueError(
                f"lease ({lease:g} s) must be longer than one attempt may take: the client's timeouts added up "
                f"({'unbounded' if budget is None else f'{budget:g} s'}), plus {2 * RENEW_MARGIN:g} s"
            )
        self._client = client
        self._label = label(target)
        self._max_pending = max_pending
        self._flush_on_exit = float(flush_on_exit)
        self._settings = Settings(
            send=client._deliver,
            attempt_budget=budget,
            interval=None if rate_limit is None else 60.0 / rate_limit,
            max_age=max_age,
            on_failure=on_failure,
            clock=SystemClock(),
        )
        try:
            self._store: Store = open_store(
                target, durability=durability, lease=lease, scope=token_scope(client._token)
            )
        except BaseException:
            if self._own_client:
                client.close()
            raise
        self._settings.clock = self._store.clock
        self._set_up_process()
        _LIVE.add(self)
        if self._store.counts()["pending"]:
            self._delivering()

    def _set_up_process(self) -> None:
        """This process's state: a new one after a fork (the store was reopened by then)."""
        self._owner = process_owner()
        self._progress = threading.Condition()
        self._start_lock = threading.Lock()
        self._delivery: Delivery | None = None
        self._closed = False
        self._released = False
        self._forked = False

    def __repr__(self) -> str:
        return f"Outbox({self._label!r}, host={self._client.host!r})"

    # -- queueing -----------------------------------------------------------------------------------------------

    def within(self, connection: object) -> Within:
        """`track_lead` / `track_sale` written through your own database `connection`, in its current
        transaction: the event exists only if that transaction commits (see `Within`).

        `connection`: a psycopg 3 or psycopg2 connection, a SQLAlchemy `Connection` or `Session`, or Django's
        `connection` / `connections[alias]`, on the outbox's database. `TypeError` for anything else;
        `ValueError` for an outbox kept in a file (only a database can join your transaction).
        """
        self._check_usable()
        return Within(self, self._store.through(connection))

    def _enqueue(self, request: TrackRequest[Any] | TrackError, through: Through | None) -> OutboxResult:
        """Store a checked request (directly, or `through` the app's connection), or hand back its error."""
        if not isinstance(request, TrackRequest):
            return request
        if self._forked:
            try:
                self._reopen_after_fork()
            except (OSError, ValueError, StorageError) as exc:  # the store cannot be opened again here: tried again
                return self._not_stored(exc)
        event = _new_event(request)
        try:
            stored = (self._store if through is None else through).enqueue(
                event, now=self._settings.clock.now(), max_pending=self._max_pending
            )
        except (Full, KeyReused) as refusal:
            return self._refused(refusal)
        except StorageError as exc:
            return self._not_stored(exc)
        if not stored[1]:
            self._delivering()
            if through is not None:  # it polls meanwhile: not every driver says when a transaction commits
                through.on_commit(self._delivering)
        return _queued(event, stored)

    def _not_stored(self, exc: Exception) -> TrackError:
        logger.warning("CutMeShort outbox %s: an event could not be stored: %s", self._label, exc)
        return error(f"The event could not be stored in {self._label}: {exc}", kind="storage_error")

    def _enqueue_many(self, requests: Sequence[TrackRequest[Any]]) -> list[OutboxResult]:
        """For `import_events`: the requests stored in one transaction, so one commit; their results in order.
        `StorageError` when the transaction fails: then none of them is stored."""
        self._check_usable()
        events = [_new_event(request) for request in requests]
        outcomes = self._store.enqueue_many(events, now=self._settings.clock.now(), max_pending=self._max_pending)
        if any(not isinstance(outcome, Exception) and not outcome[1] for outcome in outcomes):
            self._delivering()
        return [
            self._refused(outcome) if isinstance(outcome, Exception) else _queued(event, outcome)
            for event, outcome in zip(events, outcomes, strict=True)
        ]

    def _refused(self, refusal: Full | KeyReused) -> TrackError:
        if isinstance(refusal, KeyReused):
            return error(
                "This idempotency_key belongs to another event in the outbox, with different content",
                kind="idempotency_key_reused",
                details={"idempotency_key": "already used", "event_id": refusal.event_id},
            )
        logger.warning(
            "CutMeShort outbox %s is full (max_pending=%d): an event was refused", self._label, self._max_pending
        )
        return error(
            f"The outbox holds {self._max_pending} undelivered events (max_pending): the event was not stored",
            kind="outbox_full",
        )

    def _listen(self, listener: Callable[[Outcome], object]) -> Callable[[], None]:
        """Call `listener("delivered")` or `listener("failed")` in the delivery thread as this process records an
        outcome (for `import_events`' progress); returns what stops it."""
        self._settings.listeners.append(listener)
        return lambda: self._settings.listeners.remove(listener)

    def _paused(self) -> bool:
        return self._delivery is not None and self._delivery.paused

    def _delivering(self) -> Delivery:
        """The running delivery thread, started if need be, and woken if it waits for work."""
        delivery = self._delivery
        if delivery is None:
            with self._start_lock:
                delivery = self._delivery
                if delivery is None:
                    delivery = Delivery(self._store, self._owner, self._settings, self._progress, self._thread_ended)
                    delivery.start()
                    self._delivery = delivery
                    return delivery
        if delivery.idle:
            delivery.wake()
        return delivery

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver what is pending now (in this process or, where the store is shared, any other); wait for it.

        True once none of the events pending at the call is pending any more (delivered, or failed for good);
        False when `timeout` seconds passed first, or at once when delivery is paused (401/403; logged). A store
        that cannot be read for a while (a database restarting) is waited for, within `timeout`; one that does not
        answer (a database that hangs) is not waited for past it, but for the 2 s its call's cancel may take.
        Without a timeout it waits as long as that takes, through an API outage or a store that cannot be read:
        give one where either may not end.
        `RuntimeError` from `on_failure`, which runs in the delivery thread.
        """
        self._check_usable()
        deadline = None if timeout is None else time.monotonic() + timeout
        # A store that hangs is not waited for past the timeout either, but for its last look (one POLL).
        with calls_end_by(None if deadline is None else deadline + POLL):
            return self._flush_until(deadline)

    def _flush_until(self, deadline: float | None) -> bool:
        horizon: int | None = None
        delivery: Delivery | None = None
        while True:
            failure: StorageError | None = None
            try:
                if horizon is None:
                    horizon = self._store.last_seq()
                    if not self._store.pending_through(horizon):
                        return True  # nothing to wait for: no delivery thread started for it
                if delivery is None:
                    delivery = self._delivering()
                    if delivery.is_current_thread:
                        raise RuntimeError("flush() from on_failure would wait for its own thread: call it elsewhere")
                if delivery.paused:
                    logger.warning(
                        "CutMeShort outbox %s: flush() returns False: delivery is paused after a 401/403 "
                        "(see the ERROR above); call resume() once the token is fixed",
                        self._label,
                    )
                    return False
                with self._progress:
                    if not self._store.pending_through(horizon):
                        return True
                    remaining = POLL if deadline is None else min(POLL, deadline - time.monotonic())
                    if remaining > 0:
                        self._progress.wait(remaining)
            except StorageError as exc:
                failure = exc
                remaining = POLL if deadline is None else min(POLL, deadline - time.monotonic())
                if remaining > 0:
                    time.sleep(remaining)  # the delivery thread logs the failure and tries again meanwhile
            if remaining <= 0:
                if failure is not None:
                    logger.warning(
                        "CutMeShort outbox %s: flush() returns False: the store cannot be read: %s",
                        self._label,
                        failure,
                    )
                return False

    def close(self, timeout: float | None = None) -> None:
        """Deliver for up to `timeout` seconds (default: `flush_on_exit`), then stop the thread and release this
        process's claims. What is left stays in the store for the next `Outbox` on the target. Idempotent."""
        if self._closed:
            return
        if self._forked:  # nothing of this process's own to close: leave the parent's connections alone
            self._closed = True
            _LIVE.discard(self)
            return
        budget = self._flush_on_exit if timeout is None else timeout
        deadline = time.monotonic() + budget
        if self._delivery is not None and budget > 0 and not self._delivery.is_current_thread:
            self.flush(budget)
        self._closed = True
        _LIVE.discard(self)
        delivery = self._delivery
        # A moment at least, for a thread that waits rather than sends to release its claims itself.
        if delivery is None or delivery.stop(max(0.1, deadline - time.monotonic())):
            self._release_resources()
        # else: an attempt is still in flight; the thread records its outcome, then releases them itself.

    def _thread_ended(self) -> None:
        if self._closed:
            self._release_resources()

    def _release_resources(self) -> None:
        with self._start_lock:
            if self._released:
                return
            self._released = True
            if self._own_client:
                self._client.close()
            self._store.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def resume(self) -> None:
        """Deliver again after a pause (a 401 or 403 answer), e.g. once the token is fixed."""
        self._check_usable()
        if self._delivery is not None:
            self._delivery.resume()

    # -- inspection ---------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, int | bool]:
        """`{"pending", "failed", "delivered", "paused"}`: counts for the whole store (`delivered`: ever), and
        whether this process's delivery is paused. `StorageError` when the store cannot be read (a database
        down): unlike `track_*`, these admin calls raise."""
        self._check_usable()
        counts: dict[str, int | bool] = dict(self._store.counts())
        counts["paused"] = self._delivery is not None and self._delivery.paused
        return counts

    def failed(self) -> list[FailedEvent]:
        """The events that failed for good (refused by the API, or expired), oldest first, with their last result.
        `StorageError` when the store cannot be read."""
        self._check_usable()
        return [failed_event(event, json.loads(event.result or "null")) for event in self._store.failed_events()]

    def retry_failed(self) -> int:
        """Queue every failed event again (same idempotency key); returns how many. `StorageError` when the store
        cannot be written."""
        self._check_usable()
        count = self._store.retry_failed()
        if count:
            self._delivering()
        return count

    def purge_failed(self) -> int:
        """Delete every failed event; returns how many. `StorageError` when the store cannot be written."""
        self._check_usable()
        return self._store.purge_failed()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("This Outbox is closed")

    def _check_usable(self) -> None:
        self._check_open()
        if self._forked:
            self._reopen_after_fork()

    # -- fork ---------------------------------------------------------------------------------------------------

    def _reopen_after_fork(self) -> None:
        """In a forked child, on first use: connections, a claim owner and a thread of its own. The parent's
        HTTP connections are left untouched (closing them here would disturb the parent's)."""
        with self._start_lock:
            if not self._forked:
                return
            store = self._store.reopened()  # first: if it raises, the next use tries again
            _ABANDONED.append(self._store)
            self._store = store
            self._settings.clock = store.clock
            if self._own_client:
                inherited = self._client
                _ABANDONED.append(inherited)
                self._client = CMSClient(inherited._token, inherited.host, timeout=inherited.timeout)
                self._settings.send = self._client._deliver
        self._set_up_process()
        if self._store.counts()["pending"]:
            self._delivering()


def _new_event(request: TrackRequest[Any]) -> NewEvent:
    """The event to store for `request`: its body in canonical JSON and that body's hash; without a timestamp
    argument, the time is fixed now, kept apart from the body, and sent as the timestamp."""
    fields = request.body.to_dict()
    body = canonical_json(fields)
    kind = request.operation.kind
    stamped_at = None if "timestamp" in fields else time.time()
    return NewEvent(
        kind, request.idempotency_key, request.body.customer_external_id, body, content_hash(kind, body), stamped_at
    )


def _queued(event: NewEvent, stored: tuple[str, bool]) -> TrackQueued:
    event_id, duplicate = stored
    return {
        "success": True,
        "message": "Event already queued" if duplicate else "Event queued",
        "data": {"event_id": event_id, "idempotency_key": event.key, "duplicate": duplicate},
    }


def open_store(
    target: str | os.PathLike[str],
    *,
    durability: Literal["process", "power"] | None,
    lease: float,
    scope: str | None,
) -> Store:
    """The store of `target`, opened (and set up on first use). `scope`: what the PostgreSQL store keeps apart
    the events of different API tokens by (see `store.token_scope`; None: every token's, to look and retry only);
    a file keeps one token's.

    Raises `ValueError` for a target that is not an outbox, is corrupt or is newer than this SDK (the message
    names it without a password), `OSError` when it cannot be reached or created, `ImportError` when the
    `postgres` extra is not installed.
    """
    path = os.fspath(target)
    if is_database_url(path):
        if durability is not None:
            raise ValueError("durability is for a file outbox: in PostgreSQL, the commit decides")
        try:
            from .postgres import PostgresStore  # noqa: PLC0415 - psycopg only for a database target
        except ImportError as exc:
            raise ImportError(
                f"An outbox in PostgreSQL needs psycopg: pip install 'cms-python-client[postgres]' ({exc})"
            ) from None
        return PostgresStore(path, lease=lease, scope=scope)
    from .sqlite import SQLiteStore  # noqa: PLC0415 - sqlite3 only for a file target

    return SQLiteStore(path, durability or "process", lease=lease)


#: The outboxes of this process that are not closed: flushed at exit, reset in a forked child.
_LIVE: weakref.WeakSet[Outbox] = weakref.WeakSet()
#: What a forked child inherited and must not use, nor close but through `Store.forked` (a connection must not
#: cross a fork).
_ABANDONED: list[object] = []
_held_for_fork: list[Outbox] = []


def _at_exit() -> None:
    for outbox in list(_LIVE):
        try:
            outbox.close()
        except Exception:
            logger.exception("CutMeShort outbox %s: could not close at exit", outbox._label)


def _before_fork() -> None:
    # No thread of this process may be inside a store's connection while it forks: the child would inherit its
    # locks held (SQLite's, a driver's).
    _held_for_fork[:] = list(_LIVE)
    for outbox in _held_for_fork:
        for lock in outbox._store.locks:
            lock.acquire()


def _after_fork_in_parent() -> None:
    for outbox in _held_for_fork:
        for lock in reversed(outbox._store.locks):
            lock.release()
    _held_for_fork.clear()


def _after_fork_in_child() -> None:
    for outbox in _held_for_fork:
        for lock in reversed(outbox._store.locks):
            lock.release()
        outbox._store.forked()
        outbox._start_lock = threading.Lock()
        outbox._forked = True
    _held_for_fork.clear()


def _check_settings(
    target: object,
    *,
    rate_limit: object,
    max_pending: object,
    max_age: object,
    on_failure: object,
    flush_on_exit: object,
    lease: object,
    durability: object,
) -> None:
    if not isinstance(target, str) or not target:
        raise TypeError("target must be a non-empty str or os.PathLike: a path, ':memory:' or a postgresql:// URL")
    if rate_limit is not None and not _positive(rate_limit):
        raise ValueError("rate_limit must be a positive number of requests per minute, or None for no pacing")
    if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
        raise ValueError("max_pending must be an int >= 1")
    if max_age is not None and not _positive(max_age):
        raise ValueError("max_age must be a positive number of seconds, or None for no limit")
    if on_failure is not None and not callable(on_failure):
        raise TypeError("on_failure must be callable, as on_failure(event, result)")
    if not (_positive(flush_on_exit) or flush_on_exit == 0):
        raise ValueError("flush_on_exit must be a number of seconds >= 0")
    if not _positive(lease):
        raise ValueError("lease must be a positive number of seconds")
    if durability not in (None, "process", "power"):
        raise ValueError('durability must be "process" or "power"')


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf


atexit.register(_at_exit)
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


class Within:
    """`track_lead` / `track_sale` written through the app's own database connection, in its current transaction
    (from `Outbox.within(connection)`): the sale exists only if the order commits. Same arguments and results as
    `Outbox.track_*`; delivery sees the event once the transaction commits, a rollback leaves nothing. Make one
    per transaction, or keep one per connection: it holds nothing but the two."""

    track_lead = _joiner("track_lead", build_lead)
    track_sale = _joiner("track_sale", build_sale)

    def __init__(self, outbox: Outbox, through: Through) -> None:
        self._outbox = outbox
        self._through = through

    def __repr__(self) -> str:
        return f"<Within {self._outbox!r}>"
