"""How the long-running `cms` commands stop: on SIGINT (Ctrl-C) or SIGTERM (`kill`, a container stopping), however
they were started."""

from __future__ import annotations

import io
import os
import select
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import BinaryIO

#: The longest a command blocks before Python runs a signal's handler: a signal that arrives just before a blocking
#: wait begins does not interrupt it, and its handler runs only when the wait ends (input that never comes).
SIGNAL_CHECK = 0.5


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT or SIGTERM sets while inside: the command stops at its next step, as cleanly as it ends
    on its own; a second signal raises KeyboardInterrupt, to stop at once. The previous handlers come back after.

    Installed whatever SIGINT's handler was: a background job (`cmd &`, nohup) starts with SIGINT ignored, and
    Python leaves it ignored. Outside the main thread, where Python installs no handler, the event is only set by
    its holder.
    """
    stop = threading.Event()
    signalled = False

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal signalled
        if signalled:
            raise KeyboardInterrupt
        signalled = True
        # Not stop.set() here: the handler runs in the main thread, which may be inside stop.wait() holding the
        # event's lock, and would wait for itself. Another thread takes the lock once the main thread lets it go.
        threading.Thread(target=stop.set, name="cms-stop").start()

    with _handled_by(handle):
        yield stop


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """While inside, SIGINT or SIGTERM raises KeyboardInterrupt at once, however the command was started: for a
    step with nothing to finish cleanly, which may wait for ever (standard input that never comes)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    with _handled_by(handle):
        yield


@contextmanager
def _handled_by(handle: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """SIGINT and SIGTERM handled by `handle` while inside, whatever their handlers were (a background job
    starts with SIGINT ignored); the previous handlers after. Outside the main thread, where Python installs no
    handler, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def wait_for(stop: threading.Event) -> None:
    """Until `stop` is set, in waits of `SIGNAL_CHECK` seconds at most."""
    while not stop.wait(SIGNAL_CHECK):
        continue


def copy_to_end(source: BinaryIO, target: BinaryIO) -> None:
    """Copy `source` (a file, a pipe, a terminal) to `target`, to its end, in waits for input of `SIGNAL_CHECK`
    seconds at most."""
    try:
        descriptor = source.fileno()
    except io.UnsupportedOperation:  # in memory: nothing to wait for
        descriptor = None
    if descriptor is None or os.name != "posix":  # select() takes only sockets on Windows
        shutil.copyfileobj(source, target)
        return
    while chunk := _read_when_ready(descriptor):
        target.write(chunk)


def _read_when_ready(descriptor: int) -> bytes:
    """The next bytes from `descriptor` (none at its end), waiting `SIGNAL_CHECK` seconds at most at a time."""
    while not select.select([descriptor], [], [], SIGNAL_CHECK)[0]:
        continue
    return os.read(descriptor, 1 << 16)
