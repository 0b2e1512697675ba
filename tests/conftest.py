"""Shared fixtures: a loopback server, each test run against both faces (sync and async), retries without real
waiting, and small helpers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from cms_python import AsyncCMSClient, CMSClient, TrackResult, _retry
from cms_python._attempts import Attempts, Wait

from .support import ROOT
from .support.postgres import INSTALL_HINT, REQUIRED, PostgresServer, binaries
from .support.servers import LoopbackServer

# A fake token that the tests look for in every output.
TOKEN = "test-token-5f1c9a"
#: The seed README's standard lead and sale, as keyword arguments.
LEAD = {"click_id": "id_123", "event_name": "signup_started", "customer_external_id": "user_42"}
SALE = {
    "click_id": "id_123",
    "event_name": "purchase_completed",
    "customer_external_id": "user_42",
    "invoice_id": "inv_987",
    "amount": 4999,
    "currency": "USD",
}


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    instance = LoopbackServer()
    yield instance
    instance.close()


#: The checked-in OpenAPI spec, the single source of truth.
SPEC_PATH = ROOT / "openapi" / "cutmeshort.yaml"


@pytest.fixture(scope="session")
def spec() -> dict[str, Any]:
    """The checked-in spec, parsed once per session: tests must not change it."""
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _fast_backoff(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain backoff starts at 10 ms instead of 500 ms, so retries cost no real waiting; tests marked
    `shipped_backoff` see the constants the SDK ships with."""
    if request.node.get_closest_marker("shipped_backoff") is None:
        monkeypatch.setattr(_retry, "INITIAL_DELAY", 0.01)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def key_of(recorded: Any) -> str:
    """The `Idempotency-Key` header of a request a test server recorded."""
    (value,) = [value for name, value in recorded.headers.items() if name.lower() == "idempotency-key"]
    return value


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own settings must not leak into tests.
    monkeypatch.delenv("CMS_BEARER_TOKEN", raising=False)
    monkeypatch.delenv("CMS_HOST", raising=False)


class Face:
    """Drives `CMSClient` or `AsyncCMSClient` through one blocking interface, so one test covers both."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._loop = asyncio.new_event_loop() if kind == "async" else None
        self._clients: list[Any] = []

    def client(self, **kwargs: Any) -> FaceClient:
        kwargs.setdefault("token", TOKEN)
        client = AsyncCMSClient(**kwargs) if self.kind == "async" else CMSClient(**kwargs)
        self._clients.append(client)
        return FaceClient(client, self.run)

    def run(self, value: Any) -> Any:
        return self._loop.run_until_complete(value) if self._loop is not None else value

    def close(self) -> None:
        for client in self._clients:
            self.run(client.aclose()) if self.kind == "async" else client.close()
        if self._loop is not None and not self._loop.is_closed():
            # As asyncio.run does: a response body read only in part leaves httpx's async generators to finish.
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()


class FaceClient:
    def __init__(self, client: Any, run: Callable[[Any], Any]) -> None:
        self.raw = client
        self._run = run

    def track_lead(self, **kwargs: Any) -> TrackResult:
        return self._run(self.raw.track_lead(**kwargs))  # type: ignore[no-any-return]

    def track_sale(self, **kwargs: Any) -> TrackResult:
        return self._run(self.raw.track_sale(**kwargs))  # type: ignore[no-any-return]


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest) -> Iterator[Face]:
    instance = Face(request.param)
    yield instance
    instance.close()


@pytest.fixture
def client(face: Face, server: LoopbackServer) -> FaceClient:
    """A client of the face under test, pointed at the loopback server."""
    return face.client(host=server.url)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test session's own (see `support.postgres`); skipped where there is none, but
    in CI (`CMS_REQUIRE_POSTGRES=1`), where it fails."""
    if binaries() is None:
        if REQUIRED:
            pytest.fail(f"CMS_REQUIRE_POSTGRES=1 but no {INSTALL_HINT}")
        pytest.skip(f"needs {INSTALL_HINT}")
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the retry loop decided on before each retry (`Wait.seconds`), in order, whichever face: what a
    test checks instead of timing the call on a busy machine."""
    decided: list[float] = []
    decide = Attempts.decide

    def recording(self: Attempts, outcome: Any) -> Any:
        decision = decide(self, outcome)
        if isinstance(decision, Wait):
            decided.append(decision.seconds)
        return decision

    monkeypatch.setattr(Attempts, "decide", recording)
    return decided
