"""The Django middleware and outbox, through Django's test clients: a sync and an async middleware stack,
sync and async views."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path

from cms_python.integrations import django as cms_django
from cms_python.testing import Sandbox

from ..support.sandbox import ServedSandbox, served_sandbox
from ..support.web import ABC_COOKIE, HOSTILE_QUERY_VALUES

if not settings.configured:
    settings.configure(
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["cms_python.integrations.django.ClickIdMiddleware"],
        ALLOWED_HOSTS=["testserver"],
        SECRET_KEY="not-a-secret",
        DATABASES={},
        INSTALLED_APPS=[],
    )
    django.setup()


def landing(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"click_id": request.cms_click_id})  # type: ignore[attr-defined]


async def async_landing(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"click_id": request.cms_click_id})  # type: ignore[attr-defined]


def signup(request: HttpRequest) -> JsonResponse:
    result = cms_django.outbox().track_lead(
        click_id=request.cms_click_id,  # type: ignore[attr-defined]
        event_name="signup_started",
        customer_external_id=request.POST["user"],
    )
    return JsonResponse(result)


async def async_signup(request: HttpRequest) -> JsonResponse:
    return signup(request)


urlpatterns = [
    path("", landing),
    path("async", async_landing),
    path("signup", signup),
    path("async-signup", async_signup),
]


class Browser:
    """Django's `Client` (sync middleware stack) or `AsyncClient` (async stack), driven the same way."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.client: Client | AsyncClient = AsyncClient() if kind == "async" else Client()

    def get(self, url: str, **extra: Any) -> Any:
        return self._call("get", url, **extra)

    def post(self, url: str, data: dict[str, str]) -> Any:
        return self._call("post", url, data=data)

    def _call(self, method: str, url: str, **extra: Any) -> Any:
        call = getattr(self.client, method)
        return async_to_sync(call)(url, **extra) if self.kind == "async" else call(url, **extra)


def set_cookies(response: Any) -> list[str]:
    return [morsel.OutputString() for morsel in response.cookies.values()]


@pytest.fixture(params=["sync", "async"])
def browser(request: pytest.FixtureRequest) -> Browser:
    return Browser(request.param)


@pytest.mark.parametrize("view", ["/", "/async"])
def test_a_click_id_in_the_url_sets_the_cookie_and_is_the_request_s(browser: Browser, view: str) -> None:
    response = browser.get(f"{view}?cms_rf=abc")
    assert response.json() == {"click_id": "abc"}
    assert set_cookies(response) == [ABC_COOKIE]
    later = browser.get(view)
    assert later.json() == {"click_id": "abc"}
    assert set_cookies(later) == []


@override_settings(DEBUG=True)
def test_the_middleware_runs_in_either_stack_without_being_adapted(
    browser: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    # With DEBUG, Django logs each middleware it must wrap in a thread or an event loop to fit the stack.
    caplog.set_level(logging.DEBUG, logger="django.request")
    assert browser.get("/?cms_rf=abc").json() == {"click_id": "abc"}
    assert [record.getMessage() for record in caplog.records if "adapted" in record.getMessage()] == []


def test_no_click_id_anywhere(browser: Browser) -> None:
    response = browser.get("/?page=2")
    assert response.json() == {"click_id": None}
    assert set_cookies(response) == []


def test_last_click_by_default(browser: Browser) -> None:
    browser.get("/?cms_rf=abc")
    assert browser.get("/async?cms_rf=xyz").json() == {"click_id": "xyz"}
    assert browser.client.cookies["cms_rf"].value == "xyz"


@override_settings(CMS_ATTRIBUTION="first_click")
def test_first_click_keeps_the_cookie(browser: Browser) -> None:
    browser.get("/?cms_rf=abc")
    response = browser.get("/?cms_rf=xyz")
    assert response.json() == {"click_id": "abc"}
    assert set_cookies(response) == []
    assert browser.client.cookies["cms_rf"].value == "abc"


@override_settings(CMS_COOKIE_MAX_AGE=3600)
def test_https_sets_secure_and_the_lifetime_is_configurable(browser: Browser) -> None:
    response = browser.get("/?cms_rf=abc", secure=True)
    assert set_cookies(response) == ["cms_rf=abc; Max-Age=3600; Path=/; SameSite=Lax; Secure"]


def test_values_a_cookie_allows_unquoted_are_sent_unquoted(browser: Browser) -> None:
    response = browser.get("/?cms_rf=a%2Fb%3D")
    assert set_cookies(response) == [ABC_COOKIE.replace("abc", "a/b=")]


@pytest.mark.parametrize("value", HOSTILE_QUERY_VALUES.values(), ids=HOSTILE_QUERY_VALUES.keys())
def test_a_hostile_value_is_ignored(browser: Browser, value: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cms_python.integrations")
    response = browser.get(f"/?cms_rf={value}")
    assert (response.status_code, response.json()) == (200, {"click_id": None})
    assert set_cookies(response) == []
    assert [record.levelname for record in caplog.records if record.name.startswith("cms_python")] == ["DEBUG"]


def test_a_hostile_cookie_is_ignored(browser: Browser) -> None:
    browser.client.cookies["cms_rf"] = "x" * 10_240
    response = browser.get("/")
    assert (response.status_code, response.json()) == (200, {"click_id": None})


@override_settings(CMS_ATTRIBUTION="first")
def test_bad_settings_are_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="attribution"):
        Client().get("/")


# -- the outbox --------------------------------------------------------------------------------------------------


@pytest.fixture
def sandbox(cms_sandbox: Sandbox, tmp_path: Path) -> Iterator[ServedSandbox]:
    """The sandbox served, and the settings that point the outbox at it (changing them back closes it)."""
    with (
        served_sandbox(cms_sandbox) as served,
        override_settings(
            CMS_OUTBOX_PATH=str(tmp_path / "outbox.sqlite3"), CMS_HOST=served.url, CMS_BEARER_TOKEN=served.token
        ),
    ):
        yield served


@pytest.mark.parametrize("view", ["/signup", "/async-signup"])
def test_a_signup_after_a_tracked_visit_tracks_a_lead_with_its_click_id(
    browser: Browser, sandbox: ServedSandbox, view: str
) -> None:
    browser.get("/?cms_rf=abc")
    response = browser.post(view, data={"user": "user_42"})
    assert (response.json()["success"], response.json()["message"]) == (True, "Event queued")
    assert cms_django.outbox().flush(timeout=30)
    (lead,) = sandbox.sandbox.leads
    assert (lead.click_id, lead.customer_external_id) == ("abc", "user_42")


def test_the_handler_does_not_wait_for_the_api(browser: Browser, sandbox: ServedSandbox) -> None:
    browser.get("/?cms_rf=abc")
    sandbox.sandbox.delay_next(2.0)
    browser.post("/async-signup", data={"user": "user_42"})
    sandbox.events.append("handler returned")
    assert cms_django.outbox().flush(timeout=30)
    assert sandbox.events == ["handler returned", "sandbox answered POST /track/lead -> 200"]


def test_one_outbox_per_process_until_its_settings_change(sandbox: ServedSandbox, tmp_path: Path) -> None:
    first = cms_django.outbox()
    assert cms_django.outbox() is first
    with override_settings(CMS_OUTBOX_PATH=str(tmp_path / "other.sqlite3")):
        assert cms_django.outbox() is not first


@override_settings(CMS_BEARER_TOKEN="token-1234567890")
def test_the_outbox_needs_a_path() -> None:
    with pytest.raises(ImproperlyConfigured, match="CMS_OUTBOX_PATH"):
        cms_django.outbox()
