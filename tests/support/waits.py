"""Waiting for what another thread or process does: always with a deadline, so that a regression fails, saying
what it waited for, instead of hanging the run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: Long enough for a loaded 2-core machine; a wait that needs it is already a failure in the making.
TIMEOUT = 30.0


def wait_until(condition: Callable[[], object], timeout: float = TIMEOUT, what: str = "the condition") -> None:
    """Return once `condition()` is true; `AssertionError` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


async def wait_until_async(
    condition: Callable[[], object], timeout: float = TIMEOUT, what: str = "the condition"
) -> None:
    """`wait_until` for a coroutine: the event loop runs meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.005)
