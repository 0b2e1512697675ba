"""pytest fixtures for code that tracks with CutMeShort, registered automatically (entry point `pytest11`).

    def test_signup_is_tracked(cms_sandbox, cms_client):
        signup(client=cms_client, user_id="user_42", click_id="id_123")  # your code
        (lead,) = cms_sandbox.leads
        assert (lead.event_name, lead.click_id) == ("signup_started", "id_123")

Each test gets a fresh `Sandbox`. Need other settings (a fixed token, a rate limit)? Override `cms_sandbox`
in your conftest.py: `return Sandbox(token="...", rate_limit=60)`; the client fixtures follow it.
`cms_outbox` is an `Outbox` delivering to the same sandbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ._async_client import AsyncCMSClient
from ._client import CMSClient
from .testing import Sandbox

if TYPE_CHECKING:
    from ._outbox import Outbox


@pytest.fixture
def cms_sandbox() -> Sandbox:
    """A fresh in-memory CutMeShort API: inspect `.leads`, `.sales`, `.requests`, `.attributions()`."""
    return Sandbox()


@pytest.fixture
def cms_client(cms_sandbox: Sandbox) -> Iterator[CMSClient]:
    """A `CMSClient` that sends to `cms_sandbox`; closed after the test."""
    with cms_sandbox.client() as client:
        yield client


@pytest.fixture
def cms_async_client(cms_sandbox: Sandbox) -> Iterator[AsyncCMSClient]:
    """An `AsyncCMSClient` that sends to `cms_sandbox`; `await` its methods in your async test (any event loop
    runner: pytest-asyncio, anyio, or `asyncio.run`). Closed after the test."""
    client = cms_sandbox.async_client()
    yield client
    # Nothing in it is bound to the test's event loop (the sandbox transport holds no connections).
    asyncio.run(client.aclose())


@pytest.fixture
def cms_outbox(cms_sandbox: Sandbox, tmp_path: Path) -> Iterator[Outbox]:
    """An `Outbox` on a temporary file, delivering to `cms_sandbox` with no pacing. Delivery runs in the
    background: call `cms_outbox.flush()` before looking at the sandbox. Flushed and closed after the test."""
    from ._outbox import Outbox  # noqa: PLC0415 - sqlite3 and a thread only for the tests that use it

    with (
        cms_sandbox.client() as client,
        Outbox(tmp_path / "cms-outbox.sqlite3", client=client, rate_limit=None) as outbox,
    ):
        yield outbox
