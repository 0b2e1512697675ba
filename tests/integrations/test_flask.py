"""The Flask extension, through Flask's own test client: click-id capture, the cookie, the app's outbox."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g, request
from flask.testing import FlaskClient

from cms_python.integrations.flask import CMS
from cms_python.testing import Sandbox

from ..support.sandbox import ServedSandbox, served_sandbox
from ..support.web import ABC_COOKIE, HOSTILE_QUERY_VALUES


def make_app(**options: Any) -> tuple[Flask, CMS]:
    app = Flask(__name__)
    cms = CMS(app, **options)

    @app.get("/")
    def landing() -> dict[str, Any]:
        return {"click_id": g.cms_click_id}

    @app.post("/signup")
    def signup() -> dict[str, Any]:
        result = cms.outbox.track_lead(
            click_id=g.cms_click_id, event_name="signup_started", customer_external_id=request.form["user"]
        )
        return dict(result)

    return app, cms


def set_cookies(response: Any) -> list[str]:
    return response.headers.getlist("Set-Cookie")  # type: ignore[no-any-return]


@pytest.fixture
def client() -> FlaskClient:
    app, _ = make_app()
    return app.test_client()


def test_a_click_id_in_the_url_sets_the_cookie_and_is_the_request_s(client: FlaskClient) -> None:
    response = client.get("/?cms_rf=abc")
    assert response.json == {"click_id": "abc"}
    assert set_cookies(response) == [ABC_COOKIE]
    # Later requests carry it in the cookie; nothing is set again.
    later = client.get("/")
    assert later.json == {"click_id": "abc"}
    assert set_cookies(later) == []


def test_no_click_id_anywhere(client: FlaskClient) -> None:
    response = client.get("/?page=2")
    assert response.json == {"click_id": None}
    assert set_cookies(response) == []


def test_last_click_by_default(client: FlaskClient) -> None:
    client.get("/?cms_rf=abc")
    response = client.get("/?cms_rf=xyz")
    assert response.json == {"click_id": "xyz"}
    cookie = client.get_cookie("cms_rf")
    assert cookie is not None
    assert cookie.value == "xyz"


def test_first_click_keeps_the_cookie() -> None:
    app, _ = make_app(attribution="first_click")
    client = app.test_client()
    client.get("/?cms_rf=abc")
    response = client.get("/?cms_rf=xyz")
    assert response.json == {"click_id": "abc"}
    assert set_cookies(response) == []
    cookie = client.get_cookie("cms_rf")
    assert cookie is not None
    assert cookie.value == "abc"


def test_https_sets_secure_and_the_lifetime_is_configurable() -> None:
    app, _ = make_app(cookie_max_age=3600)
    response = app.test_client().get("/?cms_rf=abc", base_url="https://shop.example")
    assert set_cookies(response) == ["cms_rf=abc; Max-Age=3600; Path=/; SameSite=Lax; Secure"]


@pytest.mark.parametrize("value", HOSTILE_QUERY_VALUES.values(), ids=HOSTILE_QUERY_VALUES.keys())
def test_a_hostile_value_is_ignored(client: FlaskClient, value: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cms_python.integrations")
    response = client.get(f"/?cms_rf={value}")
    assert response.status_code == 200
    assert response.json == {"click_id": None}
    assert set_cookies(response) == []
    assert [record.levelname for record in caplog.records] == ["DEBUG"]


def test_a_hostile_cookie_is_ignored(client: FlaskClient) -> None:
    response = client.get("/", headers={"Cookie": "cms_rf=" + "x" * 10_240})
    assert (response.status_code, response.json) == (200, {"click_id": None})


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="attribution"):
        CMS(attribution="last")  # type: ignore[arg-type]


# -- the outbox --------------------------------------------------------------------------------------------------


@pytest.fixture
def sandbox(cms_sandbox: Sandbox) -> Any:
    with served_sandbox(cms_sandbox) as served:
        yield served


def outbox_app(sandbox: ServedSandbox, tmp_path: Path) -> tuple[Flask, CMS]:
    app, cms = make_app()
    app.config.update(
        CMS_OUTBOX_PATH=str(tmp_path / "outbox.sqlite3"), CMS_HOST=sandbox.url, CMS_BEARER_TOKEN=sandbox.token
    )
    return app, cms


def test_a_signup_after_a_tracked_visit_tracks_a_lead_with_its_click_id(sandbox: ServedSandbox, tmp_path: Path) -> None:
    app, cms = outbox_app(sandbox, tmp_path)
    client = app.test_client()
    client.get("/?cms_rf=abc")
    response = client.post("/signup", data={"user": "user_42"})
    assert response.json is not None
    assert (response.json["success"], response.json["message"]) == (True, "Event queued")
    with app.app_context():
        outbox = cms.outbox
        assert outbox.flush(timeout=30)
        outbox.close()
    (lead,) = sandbox.sandbox.leads
    assert (lead.click_id, lead.customer_external_id, lead.event_name) == ("abc", "user_42", "signup_started")


def test_the_handler_does_not_wait_for_the_api(sandbox: ServedSandbox, tmp_path: Path) -> None:
    app, cms = outbox_app(sandbox, tmp_path)
    client = app.test_client()
    client.get("/?cms_rf=abc")
    sandbox.sandbox.delay_next(2.0)
    client.post("/signup", data={"user": "user_42"})
    sandbox.events.append("handler returned")
    with app.app_context():
        assert cms.outbox.flush(timeout=30)
        cms.outbox.close()
    assert sandbox.events == ["handler returned", "sandbox answered POST /track/lead -> 200"]


def test_one_outbox_per_app_made_from_its_config(sandbox: ServedSandbox, tmp_path: Path) -> None:
    app, cms = outbox_app(sandbox, tmp_path)
    with app.app_context():
        first = cms.outbox
        assert cms.outbox is first
    with app.app_context():
        assert cms.outbox is first
        first.close()


def test_the_outbox_needs_a_path() -> None:
    app, cms = make_app()
    with app.app_context(), pytest.raises(RuntimeError, match="CMS_OUTBOX_PATH"):
        _ = cms.outbox
