"""The outbox's delivery thread: claims stored events, sends each with one attempt, records the outcome.

What to do with an outcome is decided here (the decision of one attempt is `CMSClient._deliver`'s, with
`Attempts`): delivered; retry later (retryable: the event waits, with exponential backoff capped at
`MAX_BACKOFF` or the server's Retry-After, and every process using the file holds off as long); failed
(permanent, or older than `max_age`: `on_failure` is called); or pause (401/403: every event would fail the same
way, so nothing is sent until `resume()`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import attrs
from cms_api_client.types import UNSET

from .. import _retry
from .._attempts import Done, GaveUp
from .._operations import LEAD, SALE, Operation, TrackRequest
from .._printable import sdk_logger
from .._results import error
from .._types import TrackError
from .store import LONGEST_WAIT, Claim, Clock, StorageError, Store, StoredEvent, calls_end_by

logger = sdk_logger("cms_python")

#: The longest an event waits between attempts, and the longest Retry-After honoured.
MAX_BACKOFF = LONGEST_WAIT
#: A claim is renewed before an attempt that could outlast it by less than this margin.
RENEW_MARGIN = 1.0
#: Events claimed at once when there is no pacing (with pacing, one: each takes its own slot).
BATCH = 32
#: How often to look again when events are pending but none can be sent yet (another process holds them, or
#: they wait for a retry), and, when nothing is pending, for events queued by other processes.
POLL = 0.25
IDLE_POLL = 1.0
#: The longest wait between two tries of a store that fails (a file that cannot be written, a database down).
STORAGE_RETRY = 30.0
#: How often to look for claims of processes that died.
DEAD_OWNER_CHECK = 1.0
_OPERATIONS: dict[str, Operation[Any]] = {"lead": LEAD, "sale": SALE}
#: What a listener is told: an event of this process's claims left `pending`.
Outcome = Literal["delivered", "failed"]
_PAUSING_STATUSES = (401, 403)


@dataclass(frozen=True, slots=True)
class FailedEvent:
    """An event that will not be delivered as it is: refused by the API (`result` says why) or expired.

    `arguments` are the `track_lead` / `track_sale` keyword arguments it was queued with (`timestamp` included,
    the one the outbox stamped if none was given; the key is `idempotency_key`).
    """

    event_id: str
    kind: Literal["lead", "sale"]
    idempotency_key: str
    arguments: dict[str, Any]
    result: TrackError


def failed_event(event: StoredEvent, result: TrackError) -> FailedEvent:
    try:
        model = _payload(event)
    except (KeyError, ValueError, TypeError):  # an event that failed as `invalid_event`
        arguments = {}
    else:
        arguments = {name: value for name, value in attrs.asdict(model, recurse=False).items() if value is not UNSET}
    return FailedEvent(event.event_id, event.kind, event.idempotency_key, arguments, result)


@dataclass
class Settings:
    """The outbox's delivery settings, as given to `Outbox`."""

    send: Callable[[TrackRequest[Any]], Done | GaveUp]
    #: The longest one attempt of `send` takes (its deadline).
    attempt_budget: float
    interval: float | None
    max_age: float | None
    on_failure: Callable[[FailedEvent, TrackError], object] | None
    #: The store's (tests give a fake one).
    clock: Clock
    #: Told of each outcome this process records (`Outbox._listen`).
    listeners: list[Callable[[Outcome], object]] = field(default_factory=list)


class Delivery:
    """One delivery thread of one outbox in one process. `progress` is notified after each outcome."""

    def __init__(
        self,
        store: Store,
        owner: str,
        settings: Settings,
        progress: threading.Condition,
        on_exit: Callable[[], None],
    ) -> None:
        self._store = store
        self._on_exit = on_exit
        self._owner = owner
        self._settings = settings
        self._progress = progress
        self._wake = threading.Event()
        #: Nothing pending, as far as the thread knows: only then does a new event need to wake it (waking it for
        #: each event would make every enqueue wait for the thread to run).
        self.idle = False
        self._stopping = False
        #: The event being sent (or about to be): its claim is kept when `stop` gives up waiting.
        self.in_flight: int | None = None
        self.paused = False
        #: Delivered, but the storage failed to record it: recorded before anything else is claimed.
        self._unrecorded: list[StoredEvent] = []
        self._failures_in_a_row = 0
        self._last_dead_owner_check = 0.0
        #: Storage failures in a row: each makes the next look wait longer, from 0.5 s up to `STORAGE_RETRY`.
        self._storage_failures = 0
        self._thread = threading.Thread(target=self._run, name=f"cms-outbox {store.label}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def resume(self) -> None:
        self.paused = False
        self._wake.set()

    @property
    def is_current_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to stop after the attempt in flight; True once it has (its claims released). If it has
        not within `timeout`, its claims are released now (given `timeout` too), but that of the event on the
        wire."""
        self._stopping = True
        self._wake.set()
        if self._thread.ident is not None and not self.is_current_thread:
            self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        # Every outcome is recorded as it comes: what this owner still claims was not sent, but the event on the
        # wire, and those delivered that the store failed to record (the thread records them, then releases the
        # rest). If this fails, they lapse with their lease, or at once when this process is gone.
        if not self._unrecorded:
            with contextlib.suppress(StorageError), calls_end_by(time.monotonic() + timeout):
                self._store.release_owner(self._owner, keep=self.in_flight)
        return False

    # -- the thread ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                try:
                    self._step()
                except StorageError as exc:
                    self._storage_failed(exc)
                except Exception:
                    logger.exception("CutMeShort outbox %s: unexpected error in delivery; retrying", self._store.label)
                    self._settings.clock.wait(self._wake, MAX_BACKOFF / 10)
        finally:
            # Delivered events are recorded before any claim is let go: released, they would be sent again. If this
            # fails, the claims lapse with their lease, or at once when this process is gone.
            with contextlib.suppress(StorageError):
                if self._unrecorded:
                    self._store.delivered(self._unrecorded, self._settings.clock.now())
                    self._unrecorded = []
                self._store.release_owner(self._owner)
            self._on_exit()

    def _step(self) -> None:
        clock = self._settings.clock
        now = clock.now()
        self._maintain(now)  # paused too: a database's store keeps taking in what apps commit
        if self.paused:
            self._wake.wait(IDLE_POLL)
            self._wake.clear()
            return
        interval = self._settings.interval
        # Idle from before the claim: an event queued after the claim looked wakes the wait below.
        self.idle = True
        claim = self._store.claim(self._owner, now, 1 if interval is not None else BATCH, interval)
        if claim.pending:
            self.idle = False
        if self._storage_failures:
            self._storage_failures = 0
            logger.warning("CutMeShort outbox %s: storage works again; delivering", self._store.label)
        if claim.events:
            self._deliver(claim)
        elif claim.hold > 0:
            clock.wait(self._wake, claim.hold)
        elif not claim.pending:
            if self._wake.wait(IDLE_POLL):
                self._wake.clear()
        else:
            if now - self._last_dead_owner_check >= DEAD_OWNER_CHECK:
                self._last_dead_owner_check = now
                if self._store.release_dead_owners(now):
                    return
            clock.wait(self._wake, POLL)

    def _maintain(self, now: float) -> None:
        """Between claims: record what was delivered but not recorded, and the store's housekeeping."""
        if self._unrecorded:
            self._store.delivered(self._unrecorded, now)
            self._unrecorded = []
        self._store.maintain(now)

    def _deliver(self, claim: Claim) -> None:
        """Send the claimed events one by one, each outcome recorded as it comes (so that nothing delivered is
        ever released to another process); the claims are renewed before one could lapse during an attempt."""
        remaining, expires = deque(claim.events), claim.expires
        settings = self._settings
        try:
            while remaining:
                self.in_flight = remaining[0].seq  # before looking at _stopping: `stop` reads them the other way round
                if self._stopping or self.paused:
                    self._store.release(self._owner, list(remaining))
                    return
                now = settings.clock.now()
                if expires - now < settings.attempt_budget + RENEW_MARGIN:
                    # Those no longer held lapsed (the process was suspended?): another process may send them.
                    held, expires = self._store.renew(self._owner, list(remaining), now)
                    remaining = deque(held)
                    continue
                hold = self._deliver_one(remaining.popleft())
                if hold is None or hold > 0:  # a retry or a pause; or another process was told to wait (a 429)
                    self._store.release(self._owner, list(remaining))
                    return
        finally:
            self.in_flight = None
            with self._progress:
                self._progress.notify_all()

    def _record_delivered(self, event: StoredEvent) -> float:
        try:
            hold = self._store.delivered([event], self._settings.clock.now())
        except StorageError:
            self._unrecorded.append(event)  # its claim stays this process's until it is recorded
            raise
        self._tell("delivered")
        return hold

    def _tell(self, outcome: Outcome) -> None:
        for listener in list(self._settings.listeners):
            listener(outcome)

    def _deliver_one(self, event: StoredEvent) -> float | None:
        """Send one claimed event and record its outcome: then the seconds every process must wait before sending
        (0: the batch goes on), or None when the rest of the batch must wait (a retry, a pause)."""
        settings = self._settings
        max_age = settings.max_age
        if max_age is not None and settings.clock.now() - event.queued_at >= max_age:
            return self._fail(event, _expired(event, max_age), attempted=False)
        try:
            request = _rebuild(event)
        except (KeyError, ValueError, TypeError) as exc:  # the store was edited by hand
            unreadable = error(f"The stored event cannot be read: {exc}", kind="invalid_event")
            return self._fail(event, unreadable, attempted=False)
        decision = settings.send(request)
        if isinstance(decision, Done) or _already_recorded(event, decision.result):
            self._failures_in_a_row = 0
            return self._record_delivered(event)
        if decision.result["status_code"] in _PAUSING_STATUSES:
            self._pause(event, decision.result)
            return None
        if decision.retryable:
            self._retry_later(event, decision, settings.clock.now())
            return None
        self._failures_in_a_row = 0
        return self._fail(event, decision.result, attempted=True)

    def _retry_later(self, event: StoredEvent, decision: GaveUp, now: float) -> None:
        self._failures_in_a_row += 1
        requested = decision.retry_after
        if requested is not None:
            delay = hold = min(requested, MAX_BACKOFF)
        else:
            delay = _retry.backoff(event.attempts + 1, MAX_BACKOFF)  # 1 s, 2 s, 4 s, ... for the event
            hold = _retry.backoff(self._failures_in_a_row - 1, MAX_BACKOFF)  # 0.5 s, 1 s, ... for all: an outage
        not_before = now + delay
        if self._settings.max_age is not None:  # due for expiry before then: fail it on time
            not_before = min(not_before, event.queued_at + self._settings.max_age)
        self._store.retry_later(
            self._owner, event, dict(decision.result), now=now, not_before=not_before, hold_until=now + hold
        )

    def _pause(self, event: StoredEvent, result: TrackError) -> None:
        self._store.release(self._owner, [event])
        logger.error(
            "CutMeShort outbox %s: delivery paused: the API answered %s (%s): the token is wrong or lacks access. "
            "Nothing is lost; fix the token, then call outbox.resume() (or start a new process).",
            self._store.label, result["status_code"], result["type"],
        )  # fmt: skip
        self.paused = True

    def _fail(self, event: StoredEvent, result: TrackError, *, attempted: bool) -> float:
        logger.warning(
            "CutMeShort outbox %s: %s %s failed for good: status %s, type %s",
            self._store.label, event.kind, event.event_id, result["status_code"], result["type"],
        )  # fmt: skip
        # Called before the event leaves `pending`, so that a flush() that saw it go also saw the callback run.
        on_failure = self._settings.on_failure
        if on_failure is not None:
            try:
                on_failure(failed_event(event, result), result)
            # The caller's code: even a SystemExit or KeyboardInterrupt it raises must not end this thread, which
            # would leave the outbox acknowledging events it no longer sends.
            except BaseException:
                logger.exception("CutMeShort outbox %s: on_failure raised; delivery goes on", self._store.label)
        hold = self._store.failed(event, dict(result), attempted=attempted, now=self._settings.clock.now())
        self._tell("failed")
        return hold

    def _storage_failed(self, exc: StorageError) -> None:
        if not self._storage_failures:
            logger.error(
                "CutMeShort outbox %s: cannot use its store (%s); delivery tries again, every %.0f s at most",
                self._store.label, exc, STORAGE_RETRY,
            )  # fmt: skip
        self._storage_failures += 1
        self._settings.clock.wait(self._wake, _retry.backoff(self._storage_failures - 1, STORAGE_RETRY))


def _rebuild(event: StoredEvent) -> TrackRequest[Any]:
    """The request stored for `event`."""
    return TrackRequest(_OPERATIONS[event.kind], _payload(event), event.idempotency_key)


def _payload(event: StoredEvent) -> Any:
    """The generated model of `event`'s body, with the time the outbox stamped, if it did. A timestamp in the
    body is read by `fromisoformat`, which reads back exactly what `isoformat` wrote (dateutil's parser, in
    `from_dict`, costs more than all the rest)."""
    fields = json.loads(event.body)
    timestamp = fields.pop("timestamp", None)
    model = _OPERATIONS[event.kind].payload.from_dict(fields)
    if event.stamped_at is not None:
        model.timestamp = datetime.fromtimestamp(event.stamped_at, timezone.utc)
    elif timestamp is not None:
        model.timestamp = datetime.fromisoformat(timestamp)
    return model


def _already_recorded(event: StoredEvent, result: TrackError) -> bool:
    """A 409 `duplicate_invoice` for a sale: the API keeps one sale per invoice, and this one is recorded."""
    recorded = event.kind == "sale" and result["status_code"] == 409 and result["type"] == "duplicate_invoice"
    if recorded:
        logger.info("CutMeShort outbox: sale %s was already recorded (409 duplicate_invoice)", event.event_id)
    return recorded


def _expired(event: StoredEvent, max_age: float) -> TrackError:
    last = json.loads(event.result) if event.result else None
    return error(
        f"Not delivered within max_age ({max_age:g} s) after {event.attempts} attempt(s)",
        kind="expired",
        details={"attempts": event.attempts, "last_result": last},
    )
