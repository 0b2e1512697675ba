"""The framework-free click-id rules (`cms_python.integrations`), and that no framework is imported for them."""

from __future__ import annotations

import importlib.metadata
import logging
import re
import subprocess
import sys
from urllib.parse import quote

import pytest

from cms_python.integrations import (
    DEFAULT_COOKIE_MAX_AGE,
    CapturedClickId,
    ClickIdCookie,
    ClickIdRules,
    click_id_from,
)

from ..support.web import ABC_COOKIE, HOSTILE_QUERY_VALUES

LOGGER = "cms_python.integrations"


@pytest.mark.parametrize(
    ("query_string", "cookie_header", "expected"),
    [
        ("cms_rf=abc", None, "abc"),
        (b"cms_rf=abc", b"", "abc"),
        ("", "cms_rf=abc", "abc"),
        ("page=2&cms_rf=abc&utm_source=x", "session=s1; cms_rf=old; theme=dark", "abc"),
        ("page=2", "session=s1; cms_rf=old", "old"),
        ("", "", None),
        ("cms_rf_other=abc", "xcms_rf=abc", None),
        # Decoded as a browser's URLSearchParams does, first value first.
        ("cms_rf=a%2Fb%3D%3D", None, "a/b=="),
        ("cms%5Frf=abc", None, "abc"),
        ("cms_rf=first&cms_rf=second", None, "first"),
        # The first cookie of that name (the browser sends the most specific path first); quotes are not part
        # of a cookie's value; spaces around it are not either.
        ("", "cms_rf=near; cms_rf=far", "near"),
        ("", 'cms_rf="quoted"', "quoted"),
        ("", "  cms_rf = spaced ;x=1", "spaced"),
        ("cms_rf=" + "x" * 255, None, "x" * 255),
    ],
)
def test_click_id_from_the_url_else_the_cookie(
    query_string: str | bytes, cookie_header: str | bytes | None, expected: str | None
) -> None:
    assert click_id_from(query_string, cookie_header) == expected


def test_first_click_prefers_a_cookie_already_set() -> None:
    assert click_id_from("cms_rf=new", "cms_rf=first", attribution="first_click") == "first"
    assert click_id_from("cms_rf=new", None, attribution="first_click") == "new"
    assert click_id_from("cms_rf=new", "cms_rf=" + "x" * 256, attribution="first_click") == "new"


@pytest.mark.parametrize("value", HOSTILE_QUERY_VALUES.values(), ids=HOSTILE_QUERY_VALUES.keys())
def test_a_hostile_url_value_is_ignored_with_a_debug_line(value: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    rules = ClickIdRules()
    assert rules.capture(f"cms_rf={value}", None, https=True) == CapturedClickId(None, None)
    # The cookie already there still counts, and is left alone.
    assert rules.capture(f"cms_rf={value}", "cms_rf=abc", https=True) == CapturedClickId("abc", None)
    (record, _) = caplog.records
    assert (record.name, record.levelno) == (LOGGER, logging.DEBUG)
    assert "cms_rf query parameter" in record.getMessage()
    # What the visitor sent stays out of the log (CR/LF could forge log lines).
    assert "evil" not in record.getMessage()
    assert "\r" not in record.getMessage()


@pytest.mark.parametrize(
    "cookie_header",
    [b"cms_rf=a\r\nb", b"cms_rf=a\x00b", "cms_rf=" + "x" * 10_240, "cms_rf=\u00e9t\u00e9".encode(), b"cms_rf="],
    ids=["CR/LF", "NUL", "10 KB", "non-ASCII", "empty"],
)
def test_a_hostile_cookie_is_ignored_with_a_debug_line(
    cookie_header: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    assert click_id_from("", cookie_header) is None
    assert click_id_from("", cookie_header, attribution="first_click") is None
    assert [record.levelno for record in caplog.records] == [logging.DEBUG, logging.DEBUG]
    assert "cms_rf cookie" in caplog.records[0].getMessage()


def test_raw_non_ascii_bytes_in_the_query_string_are_ignored() -> None:
    assert click_id_from("cms_rf=\u00e9".encode(), None) is None
    assert click_id_from(b"cms_rf=%FF%FE", None) is None


def test_every_visible_ascii_character_a_cookie_allows_is_kept() -> None:
    allowed = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) not in '",;\\')
    assert click_id_from(f"cms_rf={quote(allowed, safe='')}", None) == allowed
    for refused in '",;\\':
        assert click_id_from(f"cms_rf=a{quote(refused)}b", None) is None


def test_last_click_sets_the_cookie_from_the_url_even_over_an_older_one() -> None:
    captured = ClickIdRules().capture("cms_rf=abc", "cms_rf=older", https=False)
    assert captured == CapturedClickId("abc", ClickIdCookie("abc", DEFAULT_COOKIE_MAX_AGE, secure=False))
    assert captured.cookie is not None
    assert captured.cookie.header() == ABC_COOKIE


def test_first_click_sets_the_cookie_only_when_there_is_none() -> None:
    rules = ClickIdRules(attribution="first_click")
    assert rules.capture("cms_rf=abc", "cms_rf=older", https=False) == CapturedClickId("older", None)
    assert rules.capture("cms_rf=abc", None, https=False).cookie == ClickIdCookie("abc", 7_776_000, secure=False)


def test_the_cookie_is_secure_over_https_lasts_as_configured_and_is_never_http_only() -> None:
    captured = ClickIdRules(cookie_max_age=3600).capture("cms_rf=abc", None, https=True)
    assert captured.cookie is not None
    assert captured.cookie.header() == "cms_rf=abc; Max-Age=3600; Path=/; SameSite=Lax; Secure"
    assert DEFAULT_COOKIE_MAX_AGE == 90 * 24 * 3600


@pytest.mark.parametrize(
    "settings",
    [{"attribution": "last"}, {"cookie_max_age": 0}, {"cookie_max_age": True}, {"cookie_max_age": 1.5}],
)
def test_bad_rules_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"attribution|cookie_max_age"):
        ClickIdRules(**settings)  # type: ignore[arg-type]


def test_web_frameworks_are_dependencies_of_the_dev_extra_only() -> None:
    runtime, dev = set(), set()
    for requirement in importlib.metadata.requires("cms-python-client") or []:
        name = re.split(r"[^A-Za-z0-9_.-]", requirement, maxsplit=1)[0].lower()
        if "extra" not in requirement:
            runtime.add(name)
        elif re.search(r"extra\s*==\s*[\"']dev[\"']", requirement):
            dev.add(name)
    assert runtime == {"httpx", "attrs", "python-dateutil", "sniffio"}
    assert {"django", "flask", "starlette", "fastapi"} <= dev


def test_importing_the_sdk_and_the_rules_imports_no_web_framework() -> None:
    frameworks = ["django", "flask", "werkzeug", "starlette", "fastapi", "asgiref"]
    code = (
        "import sys, cms_python, cms_python.integrations, cms_python.testing\n"
        f"print(sorted(name for name in {frameworks!r} if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    # The check itself can see a framework when one is imported.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, cms_python.integrations.flask; print('flask' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "True"
