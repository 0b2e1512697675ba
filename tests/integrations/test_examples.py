"""The web-framework examples start as their READMEs say, keep the click id of a visit from a tracked link, and
track the signup that follows as a lead: against a sandbox given by CMS_BEARER_TOKEN / CMS_HOST, and against
their own sandbox when no token is set."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cms_python.testing import Sandbox

from ..support.sandbox import ServedSandbox, served_sandbox
from ..support.waits import wait_until
from ..support.web import PATIENCE, Running, example_command


def fastapi_signup(browser: httpx.Client) -> httpx.Response:
    return browser.post("/signup", json={"email": "jane@example.com"})


def flask_signup(browser: httpx.Client) -> httpx.Response:
    return browser.post("/signup", data={"email": "jane@example.com"})


def django_signup(browser: httpx.Client) -> httpx.Response:
    # A real server checks CSRF: the landing page's form carries the token.
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', browser.get("/").text)
    assert match is not None
    return browser.post("/signup", data={"email": "jane@example.com", "csrfmiddlewaretoken": match[1]})


SIGNUPS: dict[str, Callable[[httpx.Client], httpx.Response]] = {
    "fastapi": fastapi_signup,
    "flask": flask_signup,
    "django": django_signup,
}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[str, dict[str, str]], Running]]:
    started: list[Running] = []

    def run(example: str, settings: dict[str, str]) -> Running:
        env = {name: value for name, value in os.environ.items() if not name.startswith("CMS_")}
        running = Running(
            functools.partial(example_command, example),
            {**env, "CMS_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"), **settings},
            tmp_path,
        )
        started.append(running)
        running.wait_until_serving()
        return running

    yield run
    for running in started:
        running.stop()


def visit_and_sign_up(example: str, running: Running) -> None:
    with httpx.Client(base_url=running.url, timeout=PATIENCE) as browser:
        landing = browser.get("/?cms_rf=id_123")
        assert landing.status_code == 200
        assert "id_123" in landing.text
        assert browser.cookies["cms_rf"] == "id_123"
        signup = SIGNUPS[example](browser)
        assert (signup.status_code, signup.json()) == (200, {"signed_up": "jane@example.com", "tracked": True})


@pytest.fixture
def sandbox(cms_sandbox: Sandbox) -> Iterator[ServedSandbox]:
    with served_sandbox(cms_sandbox) as served:
        yield served


@pytest.mark.parametrize("example", SIGNUPS)
def test_with_a_token_the_example_tracks_the_lead_at_cms_host(
    example: str, start: Callable[[str, dict[str, str]], Running], sandbox: ServedSandbox
) -> None:
    running = start(example, {"CMS_BEARER_TOKEN": sandbox.token, "CMS_HOST": sandbox.url})
    visit_and_sign_up(example, running)
    # Delivered in the background: wait for it.
    wait_until(lambda: sandbox.sandbox.leads, timeout=PATIENCE, what="the lead")
    (lead,) = sandbox.sandbox.leads
    assert (lead.click_id, lead.customer_external_id, lead.event_name) == (
        "id_123",
        "jane@example.com",
        "signup_completed",
    )


@pytest.mark.parametrize("example", SIGNUPS)
def test_without_a_token_the_example_tracks_against_its_own_sandbox(
    example: str, start: Callable[[str, dict[str, str]], Running]
) -> None:
    running = start(example, {})
    visit_and_sign_up(example, running)
    running.wait_for_output("POST /track/lead -> 200")
    assert any("CMS_BEARER_TOKEN is not set" in line for line in running.lines)
