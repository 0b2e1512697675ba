"""The ASGI middleware, lifespan and dependency, through FastAPI and Starlette apps and their test clients."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

with warnings.catch_warnings():
    # Starlette's TestClient asks for httpx2, which needs Python 3.11 (the dev extra installs it there); on 3.10
    # it works with httpx, and says so.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

from cms_python import Outbox
from cms_python.integrations.starlette import ClickIdMiddleware, cms_lifespan, cms_outbox
from cms_python.testing import Sandbox

from ..support.sandbox import ServedSandbox, served_sandbox
from ..support.web import ABC_COOKIE, HOSTILE_QUERY_VALUES


def make_app(lifespan: Any = None, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.add_middleware(ClickIdMiddleware, **options)

    @app.get("/")
    async def landing(request: Request) -> dict[str, Any]:
        return {"click_id": request.state.cms_click_id}

    @app.get("/sync")
    def sync_landing(request: Request) -> dict[str, Any]:
        return {"click_id": request.state.cms_click_id}

    @app.post("/signup")
    async def signup(request: Request, outbox: Annotated[Outbox, Depends(cms_outbox)]) -> dict[str, Any]:
        body = await request.json()
        result = outbox.track_lead(
            click_id=request.state.cms_click_id, event_name="signup_started", customer_external_id=body["user"]
        )
        return dict(result)

    @app.post("/sync-signup")
    def sync_signup(request: Request, outbox: Annotated[Outbox, Depends(cms_outbox)]) -> dict[str, Any]:
        return dict(outbox.track_lead(click_id=request.state.cms_click_id, event_name="x", customer_external_id="u"))

    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(make_app()) as client:
        yield client


@pytest.mark.parametrize("path", ["/", "/sync"])
def test_a_click_id_in_the_url_sets_the_cookie_and_is_the_request_s(client: TestClient, path: str) -> None:
    response = client.get(f"{path}?cms_rf=abc")
    assert response.json() == {"click_id": "abc"}
    assert response.headers.get_list("set-cookie") == [ABC_COOKIE]
    later = client.get(path)
    assert later.json() == {"click_id": "abc"}
    assert later.headers.get_list("set-cookie") == []


def test_no_click_id_anywhere(client: TestClient) -> None:
    response = client.get("/?page=2")
    assert response.json() == {"click_id": None}
    assert "set-cookie" not in response.headers


def test_last_click_by_default(client: TestClient) -> None:
    client.get("/?cms_rf=abc")
    assert client.get("/?cms_rf=xyz").json() == {"click_id": "xyz"}
    assert client.cookies["cms_rf"] == "xyz"


def test_first_click_keeps_the_cookie() -> None:
    with TestClient(make_app(attribution="first_click")) as client:
        client.get("/?cms_rf=abc")
        response = client.get("/?cms_rf=xyz")
        assert response.json() == {"click_id": "abc"}
        assert "set-cookie" not in response.headers
        assert client.cookies["cms_rf"] == "abc"


def test_https_sets_secure_and_the_lifetime_is_configurable() -> None:
    with TestClient(make_app(cookie_max_age=3600), base_url="https://shop.example") as client:
        response = client.get("/?cms_rf=abc")
    assert response.headers.get_list("set-cookie") == ["cms_rf=abc; Max-Age=3600; Path=/; SameSite=Lax; Secure"]


@pytest.mark.parametrize("value", HOSTILE_QUERY_VALUES.values(), ids=HOSTILE_QUERY_VALUES.keys())
def test_a_hostile_value_is_ignored(client: TestClient, value: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cms_python.integrations")
    response = client.get(f"/?cms_rf={value}")
    assert (response.status_code, response.json()) == (200, {"click_id": None})
    assert "set-cookie" not in response.headers
    assert [record.levelname for record in caplog.records] == ["DEBUG"]


def test_a_hostile_cookie_is_ignored(client: TestClient) -> None:
    response = client.get("/", headers={"Cookie": "cms_rf=" + "x" * 10_240})
    assert (response.status_code, response.json()) == (200, {"click_id": None})


def test_cookies_split_over_several_headers_are_all_read() -> None:
    app = make_app()
    scope_headers = [(b"cookie", b"session=s1"), (b"cookie", b"cms_rf=abc")]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": scope_headers}
    asyncio.run(app({**scope, "scheme": "http", "http_version": "2", "root_path": ""}, receive, send))
    assert sent[-1]["body"] == b'{"click_id":"abc"}'


def test_a_plain_starlette_app_and_a_streamed_response() -> None:
    async def landing(request: Any) -> JSONResponse:
        return JSONResponse({"click_id": request.state.cms_click_id})

    async def stream(request: Any) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"one,"
            yield b"two"

        return StreamingResponse(chunks())

    app = Starlette(routes=[Route("/", landing), Route("/stream", stream)])
    app.add_middleware(ClickIdMiddleware)
    with TestClient(app) as client:
        assert client.get("/?cms_rf=abc").json() == {"click_id": "abc"}
        response = client.get("/stream?cms_rf=xyz")
    assert (response.text, response.headers["set-cookie"]) == ("one,two", ABC_COOKIE.replace("abc", "xyz"))


def test_through_httpx_s_asgi_transport() -> None:
    async def visit() -> tuple[str | None, Any]:
        transport = httpx.ASGITransport(app=make_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.example") as client:
            await client.get("/?cms_rf=abc")
            return client.cookies.get("cms_rf"), (await client.get("/")).json()

    assert asyncio.run(visit()) == ("abc", {"click_id": "abc"})


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="cookie_max_age"), TestClient(make_app(cookie_max_age=0)) as client:
        client.get("/")


# -- the outbox --------------------------------------------------------------------------------------------------


@pytest.fixture
def sandbox(cms_sandbox: Sandbox) -> Iterator[ServedSandbox]:
    with served_sandbox(cms_sandbox) as served:
        yield served


def outbox_client(sandbox: ServedSandbox, tmp_path: Path) -> TestClient:
    lifespan = cms_lifespan(tmp_path / "outbox.sqlite3", token=sandbox.token, host=sandbox.url)
    return TestClient(make_app(lifespan))


@pytest.mark.parametrize("path", ["/signup", "/sync-signup"])
def test_a_signup_after_a_tracked_visit_tracks_a_lead_with_its_click_id(
    sandbox: ServedSandbox, tmp_path: Path, path: str
) -> None:
    with outbox_client(sandbox, tmp_path) as client:
        client.get("/?cms_rf=abc")
        response = client.post(path, json={"user": "user_42"})
        assert (response.json()["success"], response.json()["message"]) == (True, "Event queued")
        assert client.app_state["cms_outbox"].flush(timeout=30)
    (lead,) = sandbox.sandbox.leads
    assert lead.click_id == "abc"


def test_the_handler_does_not_wait_for_the_api(sandbox: ServedSandbox, tmp_path: Path) -> None:
    with outbox_client(sandbox, tmp_path) as client:
        client.get("/?cms_rf=abc")
        sandbox.sandbox.delay_next(2.0)
        client.post("/signup", json={"user": "user_42"})
        sandbox.events.append("handler returned")
        assert client.app_state["cms_outbox"].flush(timeout=30)
    assert sandbox.events == ["handler returned", "sandbox answered POST /track/lead -> 200"]


def test_shutdown_closes_the_outbox_after_delivering(sandbox: ServedSandbox, tmp_path: Path) -> None:
    with outbox_client(sandbox, tmp_path) as client:
        client.get("/?cms_rf=abc")
        client.post("/signup", json={"user": "user_42"})
        outbox = client.app_state["cms_outbox"]
    assert [lead.click_id for lead in sandbox.sandbox.leads] == ["abc"]
    with pytest.raises(RuntimeError, match="closed"):
        outbox.stats()


def test_with_a_lifespan_of_your_own(sandbox: ServedSandbox, tmp_path: Path) -> None:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with cms_lifespan(tmp_path / "outbox.sqlite3", token=sandbox.token, host=sandbox.url)(app) as state:
            yield {**state, "mine": True}

    with TestClient(make_app(lifespan)) as client:
        client.get("/?cms_rf=abc")
        assert client.post("/signup", json={"user": "user_42"}).json()["success"] is True
        assert client.app_state["mine"] is True
        assert client.app_state["cms_outbox"].flush(timeout=30)
    assert [lead.click_id for lead in sandbox.sandbox.leads] == ["abc"]


def test_without_the_lifespan_the_dependency_says_what_is_missing(client: TestClient) -> None:
    with pytest.raises(RuntimeError, match=r"lifespan=cms_lifespan"):
        client.post("/signup", json={"user": "user_42"})


def test_tests_can_hand_handlers_an_outbox_of_their_own(cms_sandbox: Sandbox, tmp_path: Path) -> None:
    app = make_app()
    with Outbox(tmp_path / "outbox.sqlite3", client=cms_sandbox.client(), rate_limit=None) as outbox:
        app.dependency_overrides[cms_outbox] = lambda: outbox
        with TestClient(app) as client:
            client.get("/?cms_rf=abc")
            assert client.post("/signup", json={"user": "user_42"}).json()["success"] is True
        assert outbox.flush(timeout=30)
    assert [lead.click_id for lead in cms_sandbox.leads] == ["abc"]
