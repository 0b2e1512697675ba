"""Injected faults: what `Sandbox.fail_next`, `drop_next` and `delay_next` do to one request each."""

from __future__ import annotations

from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Literal

from ._records import Reply, error_reply


@dataclass(frozen=True)
class Fault:
    """What `fail_next`, `drop_next` or `delay_next` does to one request."""

    kind: Literal["fail", "drop", "delay"]
    status: int = 0
    retry_after: float | None = None
    seconds: float = 0.0
    after_processing: bool = False

    @property
    def processes(self) -> bool:
        """Whether the request is handled as usual (recorded, answer kept for its key) before the fault acts."""
        return self.kind == "delay" or self.after_processing

    def apply(self, reply: Reply | None) -> Reply:
        """The answer sent instead of `reply` (None when the request was not processed)."""
        if self.kind == "fail":
            try:
                phrase = HTTPStatus(self.status).phrase
            except ValueError:
                phrase = "Error"
            headers = {} if self.retry_after is None else {"Retry-After": f"{self.retry_after:g}"}
            message = f"Injected failure: HTTP {self.status} {phrase}"
            return error_reply(self.status, message, "sandbox_fault", None, headers)
        if self.kind == "drop" or reply is None:
            return Reply(0, None, dropped=True)
        return replace(reply, delay=self.seconds)
