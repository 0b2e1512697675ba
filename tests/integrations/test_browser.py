"""In a real browser, a visitor clicks an ad on another site, lands on an example shop served for real, and
signs up: the click id gets to the sandbox as the lead's. What a test client does not apply, Chromium does:
SameSite on a navigation from another site, Secure over https only, a cookie CutMeShort's JavaScript snippet
must still be able to read, the tracker's redirect between the ad and the landing page.

Needs Debian's `chromium` and `chromium-driver` (nothing is downloaded): skipped without them, unless
CMS_REQUIRE_BROWSER=1 (CI) makes that a failure. Host names resolve in Chromium itself (`--host-resolver-rules`),
so the ad and the tracker are sites of their own without DNS; the shop is 127.0.0.1, which the Django
example's ALLOWED_HOSTS accepts.
"""

from __future__ import annotations

import functools
import html
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from cms_python.integrations import DEFAULT_COOKIE_MAX_AGE
from cms_python.testing import Lead, Sandbox

from ..support import SUPPORT
from ..support.sandbox import ServedSandbox, served_sandbox
from ..support.waits import wait_until
from ..support.web import EXAMPLES, HOSTILE_QUERY_VALUES, PATIENCE, Running, example_command

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Three registrable domains: the ad's site, the tracker's (CutMeShort's short link) and the shop's (127.0.0.1).
AD_HOST = "ads.example.test"
TRACKER_HOST = "go.example3.test"
# A page load, a script, a wait for the browser: a hang fails after this.
BROWSER_PATIENCE = 30.0
# Its name is 127.0.0.1 and no browser trusts it: Chromium is told to ignore certificate errors.
CERTIFICATE = SUPPORT / "self-signed.pem"
EXAMPLE_NAMES = ["django", "flask", "fastapi"]
EMAIL = "jane@example.com"


@pytest.fixture(scope="module")
def browser(shops: Shops) -> Iterator[WebDriver]:
    """Headless Chromium with an empty profile; its temporary files all go in a directory removed at the end.

    Closed before the shops stop (hence `shops`): a server stopping waits for the idle TLS connections a browser
    keeps open (uvicorn up to 30 s)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        message = f"no {' and no '.join(missing)}: apt-get install chromium chromium-driver"
        if os.environ.get("CMS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{message} (CMS_REQUIRE_BROWSER=1: the browser tests must run)")
        pytest.skip(message)
    with tempfile.TemporaryDirectory(prefix="cms-chromium-") as scratch:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in (
            # As root, in a container, on a closed network: no sandbox, no GPU, nothing fetched on the side.
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={scratch}/profile",
            f"--host-resolver-rules=MAP {AD_HOST} 127.0.0.1, MAP {TRACKER_HOST} 127.0.0.1",
            "--ignore-certificate-errors",
        ):
            options.add_argument(argument)
        # The driver's path given: Selenium Manager never looks for (or downloads) one.
        service = Service(executable_path=str(CHROMEDRIVER), env={**os.environ, "TMPDIR": scratch})
        driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.set_page_load_timeout(BROWSER_PATIENCE)
            driver.set_script_timeout(BROWSER_PATIENCE)
            yield driver
        finally:
            driver.quit()


@pytest.fixture(autouse=True)
def _no_cookies(browser: WebDriver) -> None:
    """Each test starts without cookies: all shops are 127.0.0.1, and a cookie is for a host on any port."""
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})


class AdSite(ThreadingHTTPServer):
    """The other sites, on one port of 127.0.0.1: the ad's page (`/ad`), the tracker's redirect (`/go`), and a
    `/probe` page that records what a navigation to it carried."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _AdSiteHandler)
        self.port = self.server_address[1]
        self.probes: list[dict[str, str | None]] = []

    def url(self, host: str, target: str) -> str:
        return f"http://{host}:{self.port}{target}"

    def ad(self, landing: str) -> str:
        """The ad's page, whose link goes through the tracker's redirect to `landing`."""
        return self.url(AD_HOST, f"/ad?to={quote(landing, safe='')}")


class _AdSiteHandler(BaseHTTPRequestHandler):
    server: AdSite

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        to = parse_qs(query).get("to", [""])[0]
        if path == "/ad":
            link = self.server.url(TRACKER_HOST, f"/go?to={quote(to, safe='')}")
            self._reply(200, [], f'<!doctype html><title>Ad</title><a id="ad" href="{html.escape(link)}">Buy</a>')
        elif path == "/go":
            self._reply(302, [("Location", to)], "")
        elif path == "/cookies":
            self._reply(200, [("Set-Cookie", "lax=1; SameSite=Lax"), ("Set-Cookie", "strict=1; SameSite=Strict")], "")
        elif path == "/probe":
            self.server.probes.append({name: self.headers.get(name) for name in ("Sec-Fetch-Site", "Cookie")})
            self._reply(200, [], "<!doctype html><title>Probe</title>")
        else:
            self._reply(404, [], "")

    def _reply(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        content = body.encode()
        self.send_response(status)
        for name, value in [*headers, ("Content-Type", "text/html"), ("Content-Length", str(len(content)))]:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def ad_site() -> Iterator[AdSite]:
    server = AdSite()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


def click_ad(browser: WebDriver, ad_site: AdSite, landing: str) -> None:
    """Open the ad's page on its site, click its link, and wait until the landing page is there."""
    browser.get(ad_site.ad(landing))
    browser.find_element(By.ID, "ad").click()
    WebDriverWait(browser, BROWSER_PATIENCE).until(lambda _: browser.current_url.startswith(landing.partition("?")[0]))


def page_json(browser: WebDriver) -> Any:
    """The JSON the page is (Chromium shows it in a <pre>)."""
    return json.loads(browser.find_element(By.TAG_NAME, "pre").text)


def cookies_for_javascript(browser: WebDriver) -> dict[str, str]:
    """The page's `document.cookie`, as CutMeShort's snippet reads it."""
    pairs = browser.execute_script("return document.cookie").split("; ")
    return dict(pair.split("=", 1) for pair in pairs if pair)


def stored_cookie(browser: WebDriver) -> dict[str, Any]:
    """The `cms_rf` cookie as Chromium keeps it (DevTools' `Network.getCookies`). Unlike WebDriver's `get_cookie`,
    which says "Lax" for a cookie set without SameSite too (Chromium's default, which other browsers don't apply),
    it has `sameSite` only when the Set-Cookie said so."""
    (cookie,) = [
        cookie for cookie in browser.execute_cdp_cmd("Network.getCookies", {})["cookies"] if cookie["name"] == "cms_rf"
    ]
    return dict(cookie)


@dataclass
class Shop:
    """An example served on `origin`."""

    example: str
    origin: str

    def landing(self, query_value: str | None) -> str:
        """The landing page, with `?cms_rf=` and `query_value` as it is (percent-encoded) unless None."""
        return f"{self.origin}/" if query_value is None else f"{self.origin}/?cms_rf={query_value}"

    def shown_click_id(self, browser: WebDriver) -> str | None:
        """The click id the landing page says the request had."""
        if self.example == "fastapi":
            click_id: str | None = page_json(browser)["click_id"]
            return click_id
        shown = browser.find_element(By.TAG_NAME, "p").text.removeprefix("Welcome! Your click id: ")
        return None if shown == "None" else shown

    def sign_up(self, browser: WebDriver) -> Any:
        """Sign up from the landing page: its form, or for the FastAPI example (an API) a `fetch` of the page."""
        if self.example == "fastapi":
            return browser.execute_async_script(
                """const [email, done] = arguments;
                fetch("/signup", {method: "POST", headers: {"Content-Type": "application/json"},
                                  body: JSON.stringify({email})})
                    .then(response => response.json()).then(done, error => done(String(error)));""",
                EMAIL,
            )
        browser.find_element(By.NAME, "email").send_keys(EMAIL)
        browser.find_element(By.TAG_NAME, "button").click()
        WebDriverWait(browser, BROWSER_PATIENCE).until(lambda _: urlsplit(browser.current_url).path == "/signup")
        return page_json(browser)


def https_command(example: str, port: int) -> list[str]:
    """The example served over https with CERTIFICATE: by Flask's development server (werkzeug), by uvicorn for
    FastAPI, and for Django (whose runserver has no TLS) by uvicorn as an ASGI app."""
    address = ["--host", "127.0.0.1", "--port", str(port)]
    if example == "flask":
        flask = [sys.executable, "-m", "flask", "--app", str(EXAMPLES / "flask_app.py"), "run", *address]
        return [*flask, "--cert", str(CERTIFICATE), "--key", str(CERTIFICATE)]
    uvicorn = [sys.executable, "-m", "uvicorn", *address, "--ssl-certfile", str(CERTIFICATE)]
    uvicorn += ["--ssl-keyfile", str(CERTIFICATE)]
    if example == "fastapi":
        return [*uvicorn, "--app-dir", str(EXAMPLES), "fastapi_app:app"]
    return [*uvicorn, "--app-dir", str(EXAMPLES / "django_app"), "--factory", "django.core.asgi:get_asgi_application"]


class Shops:
    """The examples as servers, each started on first use and stopped with the module. All deliver to one sandbox:
    each test looks for its own click ids."""

    def __init__(self, sandbox: ServedSandbox, directory: Path) -> None:
        self.sandbox = sandbox
        self._directory = directory
        self._running: dict[tuple[str, bool, str], tuple[Running, Shop]] = {}

    def get(self, example: str, *, https: bool = False, attribution: str = "last_click") -> Shop:
        key = (example, https, attribution)
        if key not in self._running:
            scheme = "https" if https else "http"
            settings = {
                "CMS_BEARER_TOKEN": self.sandbox.token,
                "CMS_HOST": self.sandbox.url,
                "CMS_OUTBOX_PATH": str(self._directory / f"{example}-{scheme}-{attribution}.sqlite3"),
                "CMS_ATTRIBUTION": attribution,
                "DJANGO_SETTINGS_MODULE": "shop.settings",
            }
            environment = {name: value for name, value in os.environ.items() if not name.startswith("CMS_")}
            command = functools.partial(https_command if https else example_command, example)
            running = Running(command, {**environment, **settings}, self._directory)
            self._running[key] = (running, Shop(example, f"{scheme}://127.0.0.1:{running.port}"))
            running.wait_until_serving()
        return self._running[key][1]

    def leads(self, click_id: str) -> list[Lead]:
        """The leads the sandbox has for `click_id`."""
        return [lead for lead in self.sandbox.sandbox.leads if lead.click_id == click_id]

    def lead_of(self, click_id: str) -> Lead:
        """The one lead with `click_id`, once the example's outbox has delivered it."""
        wait_until(lambda: self.leads(click_id), timeout=PATIENCE, what=f"a lead for {click_id}")
        (lead,) = self.leads(click_id)
        return lead

    def stop(self) -> None:
        for running, _ in self._running.values():
            running.stop()


@pytest.fixture(scope="module")
def shops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shops]:
    with served_sandbox(Sandbox()) as sandbox:
        started = Shops(sandbox, tmp_path_factory.mktemp("shops"))
        try:
            yield started
        finally:
            started.stop()


def test_the_ad_and_the_shop_are_different_sites(browser: WebDriver, ad_site: AdSite) -> None:
    # What every journey here relies on: Chromium takes the ad's host and 127.0.0.1 for different sites.
    browser.get(ad_site.url("127.0.0.1", "/cookies"))
    click_ad(browser, ad_site, ad_site.url("127.0.0.1", "/probe"))
    # A SameSite=Strict cookie stays behind on a navigation from another site; a Lax one comes along.
    assert ad_site.probes == [{"Sec-Fetch-Site": "cross-site", "Cookie": "lax=1"}]


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_a_visitor_from_an_ad_signs_up_and_the_lead_has_the_click_id(
    browser: WebDriver, ad_site: AdSite, shops: Shops, example: str
) -> None:
    shop = shops.get(example)
    click_id = f"{example}_http_1"
    click_ad(browser, ad_site, shop.landing(click_id))
    assert shop.shown_click_id(browser) == click_id
    cookie = browser.get_cookie("cms_rf")
    assert cookie is not None
    assert (cookie["value"], cookie["path"], cookie["sameSite"], cookie["secure"], cookie["httpOnly"]) == (
        click_id,
        "/",
        "Lax",
        False,  # Secure only over https
        False,  # the snippet must read it
    )
    assert abs(cookie["expiry"] - (time.time() + DEFAULT_COOKIE_MAX_AGE)) < 3600
    # SameSite=Lax said, not Chromium's default for a cookie without it.
    assert stored_cookie(browser).get("sameSite") == "Lax"
    assert cookies_for_javascript(browser)["cms_rf"] == click_id

    assert shop.sign_up(browser) == {"signed_up": EMAIL, "tracked": True}
    lead = shops.lead_of(click_id)
    assert (lead.customer_external_id, lead.event_name) == (EMAIL, "signup_completed")


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_over_https_the_cookie_is_secure(browser: WebDriver, ad_site: AdSite, shops: Shops, example: str) -> None:
    shop = shops.get(example, https=True)
    click_id = f"{example}_https_1"
    click_ad(browser, ad_site, shop.landing(click_id))
    assert shop.shown_click_id(browser) == click_id
    cookie = browser.get_cookie("cms_rf")
    assert cookie is not None
    assert (cookie["value"], cookie["sameSite"], cookie["secure"], cookie["httpOnly"]) == (click_id, "Lax", True, False)
    assert stored_cookie(browser).get("sameSite") == "Lax"
    assert cookies_for_javascript(browser)["cms_rf"] == click_id
    assert shop.sign_up(browser) == {"signed_up": EMAIL, "tracked": True}
    assert shops.lead_of(click_id).customer_external_id == EMAIL


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_last_click_the_second_ad_click_replaces_the_first(
    browser: WebDriver, ad_site: AdSite, shops: Shops, example: str
) -> None:
    shop = shops.get(example)
    first, second = f"{example}_last_1", f"{example}_last_2"
    click_ad(browser, ad_site, shop.landing(first))
    click_ad(browser, ad_site, shop.landing(second))
    assert shop.shown_click_id(browser) == second
    assert cookies_for_javascript(browser)["cms_rf"] == second
    # Back from the other site without a click id: the SameSite=Lax cookie comes along and still says which.
    click_ad(browser, ad_site, shop.landing(None))
    assert shop.shown_click_id(browser) == second
    assert shop.sign_up(browser) == {"signed_up": EMAIL, "tracked": True}
    assert shops.lead_of(second).customer_external_id == EMAIL
    assert shops.leads(first) == []


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_first_click_the_first_ad_click_is_kept(
    browser: WebDriver, ad_site: AdSite, shops: Shops, example: str
) -> None:
    shop = shops.get(example, attribution="first_click")
    first, second = f"{example}_first_1", f"{example}_first_2"
    click_ad(browser, ad_site, shop.landing(first))
    # The second click comes from the other site too: the shop sees the first only if the cookie came along.
    click_ad(browser, ad_site, shop.landing(second))
    assert shop.shown_click_id(browser) == first
    assert cookies_for_javascript(browser)["cms_rf"] == first
    assert shop.sign_up(browser) == {"signed_up": EMAIL, "tracked": True}
    assert shops.lead_of(first).customer_external_id == EMAIL
    assert shops.leads(second) == []


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_a_click_landing_deeper_in_the_site_keeps_the_click_id_for_the_whole_site(
    browser: WebDriver, ad_site: AdSite, shops: Shops, example: str
) -> None:
    """A tracked link may land on any page: the cookie is the whole site's (`Path=/`), not only that page's folder
    (a cookie without a Path), so the signup from `/` has the click id. The examples have no such page: a 404,
    which the adapters give the cookie too."""
    shop = shops.get(example)
    click_id = f"{example}_deep_1"
    click_ad(browser, ad_site, f"{shop.origin}/products/shoes?cms_rf={click_id}")
    assert stored_cookie(browser)["path"] == "/"
    browser.get(shop.landing(None))
    assert shop.shown_click_id(browser) == click_id
    assert shop.sign_up(browser) == {"signed_up": EMAIL, "tracked": True}
    assert shops.lead_of(click_id).customer_external_id == EMAIL


HOSTILE_CLICK_IDS = {
    **HOSTILE_QUERY_VALUES,
    "HTML breaking out of an attribute": "%22%3E%3Cscript%3Ealert(1)%3C/script%3E",
    "script tag with a space": "%3Cscript%20src=//evil.example/x.js%3E%3C/script%3E",
    "second cookie": "a;%20evil=1",
}


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_a_hostile_click_id_never_becomes_a_cookie(browser: WebDriver, shops: Shops, example: str) -> None:
    shop = shops.get(example)
    for name, value in HOSTILE_CLICK_IDS.items():
        browser.get(shop.landing(value))
        assert shop.shown_click_id(browser) is None, name
        # Django's CSRF cookie, nothing else.
        assert {cookie["name"] for cookie in browser.get_cookies()} <= {"csrftoken"}, name
        assert cookies_for_javascript(browser).keys() <= {"csrftoken"}, name


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_a_script_tag_as_click_id_is_shown_as_text(browser: WebDriver, shops: Shops, example: str) -> None:
    # Without a space or a quote, a script tag is made of characters a cookie allows: a click id like any
    # other, which the examples escape.
    click_id = "<script>document.title='hacked'</script>"
    shop = shops.get(example)
    browser.get(shop.landing(quote(click_id, safe="")))
    assert shop.shown_click_id(browser) == click_id
    assert browser.execute_script("return document.scripts.length") == 0
    assert browser.title != "hacked"
    assert cookies_for_javascript(browser)["cms_rf"] == click_id


#: `cms_rf` cookie values a page's JavaScript can write but the rules refuse.
HOSTILE_COOKIE_VALUES = {
    "space": "a b",
    "double quote": 'a"b',
    "backslash": "a\\b",
    "256 characters": "x" * 256,
}


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_a_hostile_cookie_is_no_click_id(browser: WebDriver, shops: Shops, example: str) -> None:
    """A `cms_rf` cookie the rules refuse, written by the page's JavaScript (not by the shop), is no click id: the
    landing page shows none and the signup is not tracked, with that value or any other."""
    shop = shops.get(example)
    browser.get(shop.landing(None))
    for name, value in HOSTILE_COOKIE_VALUES.items():
        browser.execute_script("document.cookie = arguments[0]", f"cms_rf={value}; Path=/; SameSite=Lax")
        assert cookies_for_javascript(browser)["cms_rf"] == value, name  # Chromium kept it: the request has it
        browser.get(shop.landing(None))
        assert shop.shown_click_id(browser) is None, name
        assert shop.sign_up(browser) == {"signed_up": EMAIL, "tracked": False}, name
