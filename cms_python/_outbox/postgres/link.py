"""The PostgreSQL store's own connections (`Link`): made from the URL on first use and again once broken, their
errors told without the password, and never waited on past `DEADLINE`, whatever a server, a proxy or a lock does:
TCP timeouts and keepalives do not fire while the other side's kernel still acknowledges (a frozen PgBouncer, a
server stopped with SIGSTOP, a `LOCK TABLE`)."""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import conninfo

from ..store import StorageError, call_deadline
from ..targets import label, mask, passwords

if TYPE_CHECKING:
    from psycopg.rows import TupleRow

#: Seconds a call on one of the store's own connections may take, its wait for another thread's call on the same
#: connection included (plus connecting: libpq's `connect_timeout`). Then its statement is cancelled at the server,
#: and should the call still not end within `CANCEL_GRACE` seconds, its connection is cut: the call fails with
#: `StorageError`, and the next one connects anew. Sooner where the caller has less time (`store.calls_end_by`:
#: `Outbox.flush(timeout)`, `close()`), connecting included.
DEADLINE = 15.0
CANCEL_GRACE = 2.0
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

_R = TypeVar("_R")


class Link:
    """One connection of the store's own, made on first use and again once it broke (a server restarted, a
    network cut): a call fails with `StorageError`, the next one connects anew."""

    def __init__(self, settings: dict[str, Any], scrub: Callable[[str], str]) -> None:
        self.lock = threading.RLock()
        self._settings = settings
        self._scrub = scrub
        self._connection: psycopg.Connection[TupleRow] | None = None
        #: Whether a call is under way (a call within it runs under its deadline), and whether it overran it.
        self._calling = False
        self._overdue = False
        #: The seconds the call under way was given (`DEADLINE`, or less), for its error.
        self._allowed = DEADLINE
        _LINKS.add(self)

    def run(self, work: Callable[[psycopg.Connection[TupleRow]], _R], *, bounded: bool = True) -> _R:
        """`work(connection)`, within `DEADLINE` seconds (`bounded=False`: as long as it takes, for an admin's
        command, which Ctrl-C cancels). `StorageError` for whatever the database or the network did, the deadline
        included."""
        start = time.monotonic()
        limit = call_deadline() if bounded else None
        due = start + DEADLINE if limit is None else min(start + DEADLINE, limit)
        if due <= start:
            raise StorageError("no time left for the database: the caller's timeout passed")
        if not self.lock.acquire(timeout=due - start if bounded else -1):
            raise StorageError(f"{_no_answer(due - start)} (an earlier call still waits)")
        try:
            if self._calling:
                return work(self._connected(None))
            self._calling, self._overdue = True, False
            self._allowed = due - start
            try:
                with self._errors():
                    connection = self._connected(None if limit is None else due)
                    if not bounded:
                        return work(connection)
                    with _watchdog.watching(self, due):
                        return work(connection)
            finally:
                self._calling = False
                if self._overdue:  # a cancel still on its way must not reach the next call's statement
                    self.close()
        finally:
            self.lock.release()

    def overdue(self) -> float | None:
        """Called by the watchdog, its call past the deadline: cancel the statement; the second time, cut the
        connection. When to be called again, if at all."""
        connection = self._connection
        if connection is None or connection.closed:  # still connecting: `connect_timeout` bounds that
            return None
        if not self._overdue:
            self._overdue = True
            # In a thread of its own: with a libpq older than 17, a cancel has no timeout of its own.
            threading.Thread(target=_cancel, args=(connection,), name="cms-outbox-cancel", daemon=True).start()
            return time.monotonic() + CANCEL_GRACE
        # No answer to the cancel either: the read the call waits in ends, and with it the call.
        with contextlib.suppress(OSError, psycopg.Error), socket.socket(fileno=os.dup(connection.fileno())) as cut:
            cut.shutdown(socket.SHUT_RDWR)
        return None

    def _connected(self, due: float | None) -> psycopg.Connection[TupleRow]:
        """The connection, made if need be; by `due` (monotonic) if given, as far as libpq can (2 s at least)."""
        if self._connection is None or self._connection.closed:
            settings = self._settings
            if due is not None:
                allowed = max(2, math.ceil(due - time.monotonic()))
                configured = int(settings.get("connect_timeout") or 0)  # 0: no timeout
                settings = {**settings, "connect_timeout": str(min(configured or allowed, allowed))}
            # autocommit: a transaction only where asked for; prepare_threshold=None: no prepared statement,
            # which PgBouncer in transaction mode would hand to another server connection.
            self._connection = psycopg.connect(**settings, autocommit=True, prepare_threshold=None)
        return self._connection

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            connection = self._connection
            if connection is not None and (connection.broken or connection.closed):
                self.close()
            if self._overdue:
                # Cancelled at the server, the statement did nothing; cut off, it may yet have done its part.
                cancelled = isinstance(exc, psycopg.errors.QueryCanceled)
                outcome = "cancelled" if cancelled else "what was sent may yet be done"
                raise StorageError(f"{_no_answer(self._allowed)} ({outcome})") from None
            raise StorageError(self._scrub(str(exc).strip())) from None

    def forget_in_child(self) -> None:
        """In a forked child: close the inherited connection without a word to the server, which still talks to
        the parent on that socket (its descriptor is pointed at /dev/null first)."""
        connection, self._connection = self._connection, None
        self.lock = threading.RLock()
        self._calling = False
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


class _Watchdog:
    """The thread that acts on the calls past their deadline (`Link.overdue`), started with the first call."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        #: The links with a call under way, and when to act on it (inf: nothing more to do).
        self._calls: dict[Link, float] = {}
        self._thread: threading.Thread | None = None
        #: When the thread acts next (inf: when told): a call due sooner wakes it.
        self._next_due = float("inf")

    @contextlib.contextmanager
    def watching(self, link: Link, due: float) -> Iterator[None]:
        with self._changed:
            self._calls[link] = due
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cms-outbox-deadlines", daemon=True)
                self._thread.start()
            elif due < self._next_due:  # a call that waited (a lock, a connect) or has less time (`calls_end_by`)
                self._changed.notify()
        try:
            yield
        finally:
            with self._changed:
                del self._calls[link]

    def _run(self) -> None:
        # The condition is held while acting: a call cannot end, and its link start another, meanwhile.
        with self._changed:
            while True:
                now = time.monotonic()
                for link, due in list(self._calls.items()):
                    if due <= now:
                        self._calls[link] = link.overdue() or float("inf")
                self._next_due = min(self._calls.values(), default=float("inf"))
                waiting = self._next_due - time.monotonic()
                self._changed.wait(None if waiting == float("inf") else max(0.0, waiting))


def _no_answer(seconds: float) -> str:
    return f"no answer from the database within {seconds:.3g} s"


def _cancel(connection: psycopg.Connection[TupleRow]) -> None:
    with contextlib.suppress(psycopg.Error, OSError):
        connection.cancel_safe(timeout=CANCEL_GRACE)


def connection_settings(url: str) -> dict[str, Any]:
    """The URL's connection settings, with `_CONNECTION_DEFAULTS` where it says nothing. `ValueError` (without the
    password) for a URL libpq cannot read."""
    try:
        settings: dict[str, Any] = conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ValueError(f"Not a PostgreSQL URL libpq can read: {label(url)} ({scrubber(url, {})(str(exc))})") from None
    return {**_CONNECTION_DEFAULTS, **settings}


def scrubber(url: str, settings: dict[str, Any]) -> Callable[[str], str]:
    """What takes the password out of a driver's message (libpq quotes a connection string, or the part of it, it
    cannot read): as libpq read it, as the URL writes it, and any URL's in the message."""
    secrets = sorted(passwords(url) | {str(settings.get("password") or "")} - {""}, key=len, reverse=True)

    def scrub(message: str) -> str:
        for secret in secrets:
            message = message.replace(secret, "***")
        return mask(re.sub(r"\s+", " ", message))

    return scrub


#: The live links of this process, made unusable in a forked child; the deadlines' thread (none in a child).
_LINKS: weakref.WeakSet[Link] = weakref.WeakSet()
_watchdog = _Watchdog()


def _forget_in_child() -> None:
    global _watchdog  # noqa: PLW0603 - the parent's thread, and the lock it may have held, are not the child's
    _watchdog = _Watchdog()
    for link in list(_LINKS):
        link.forget_in_child()


os.register_at_fork(after_in_child=_forget_in_child)
