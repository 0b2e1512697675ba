"""Capture CutMeShort's click id on the server, as CutMeShort's JavaScript snippet does in the browser.

A tracked link lands on your site with `?cms_rf=<click id>`; the snippet keeps that value in a first-party
cookie named `cms_rf`, and lead and sale events must carry it as `click_id`. The adapters do the same in your
backend: `cms_python.integrations.django`, `.flask` and `.starlette` (FastAPI too). Each imports its framework;
this module imports none. For any other framework:

    from cms_python.integrations import ClickIdRules, click_id_from

    click_id = click_id_from(query_string, cookie_header)  # the request's click id, or None

    rules = ClickIdRules(attribution="last_click")          # to keep the cookie too
    captured = rules.capture(query_string, cookie_header, https=request_is_https)
    if captured.cookie is not None:
        response_headers.append(("Set-Cookie", captured.cookie.header()))

A value that is not 1 to 255 visible ASCII characters allowed in a cookie (no space, `"`, `,`, `;` or `\\`)
is ignored, with a DEBUG line on the `cms_python.integrations` logger: no click id, no cookie.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http.cookies import Morsel
from typing import Literal
from urllib.parse import unquote_plus

from .._printable import sdk_logger

__all__ = [
    "COOKIE_NAME",
    "DEFAULT_COOKIE_MAX_AGE",
    "Attribution",
    "CapturedClickId",
    "ClickIdCookie",
    "ClickIdRules",
    "click_id_from",
]

logger = sdk_logger(__name__)

#: The name of both the landing URL's query parameter and the first-party cookie (CutMeShort's snippet's).
COOKIE_NAME = "cms_rf"
#: How long the cookie lasts by default, in seconds: 90 days.
DEFAULT_COOKIE_MAX_AGE = 90 * 24 * 60 * 60

#: `"last_click"`: a new click id replaces the cookie's. `"first_click"`: a cookie already set is kept.
Attribution = Literal["last_click", "first_click"]
_ATTRIBUTIONS = ("last_click", "first_click")

# RFC 6265 cookie-octets (visible ASCII but `"`, `,`, `;`, `\`): such a value goes into Set-Cookie as it is,
# so it can neither add attributes nor need quoting, and the snippet reads back exactly what it would have set.
_CLICK_ID = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,255}")


@dataclass(frozen=True)
class ClickIdCookie:
    """The `cms_rf` cookie to set on a response: `Path=/`, `SameSite=Lax`, `Max-Age`, `Secure` over https.

    Not HttpOnly: CutMeShort's snippet must be able to read and update the same cookie.
    """

    value: str
    max_age: int
    secure: bool

    def morsel(self) -> Morsel[str]:
        """The cookie as a `http.cookies.Morsel` (what Django's `response.cookies` holds)."""
        morsel: Morsel[str] = Morsel()
        morsel.set(COOKIE_NAME, self.value, self.value)  # a valid click id needs no quoting
        morsel.update({"path": "/", "max-age": str(self.max_age), "samesite": "Lax"})
        if self.secure:
            morsel["secure"] = True
        return morsel

    def header(self) -> str:
        """The `Set-Cookie` header's value, e.g. `cms_rf=abc; Max-Age=7776000; Path=/; SameSite=Lax`."""
        return self.morsel().OutputString()


@dataclass(frozen=True)
class CapturedClickId:
    """What one request tells: its click id (None if it has none), and the cookie to set (None: leave it)."""

    click_id: str | None
    cookie: ClickIdCookie | None


class ClickIdRules:
    """The capture rules: attribution and the cookie's lifetime. Raises `ValueError` for bad settings.

    Args:
        attribution: `"last_click"` (default, as CutMeShort's snippet): a `cms_rf` in the URL replaces the
            cookie. `"first_click"`: a valid cookie already there is kept, and it is the request's click id.
        cookie_max_age: the cookie's `Max-Age` in seconds, 90 days by default.
    """

    def __init__(self, *, attribution: Attribution = "last_click", cookie_max_age: int = DEFAULT_COOKIE_MAX_AGE):
        if attribution not in _ATTRIBUTIONS:
            raise ValueError(f'attribution must be "last_click" or "first_click", not {attribution!r}')
        if isinstance(cookie_max_age, bool) or not isinstance(cookie_max_age, int) or cookie_max_age < 1:
            raise ValueError(f"cookie_max_age must be an int >= 1 (seconds), not {cookie_max_age!r}")
        self.attribution: Attribution = attribution
        self.cookie_max_age = cookie_max_age

    def __repr__(self) -> str:
        return f"ClickIdRules(attribution={self.attribution!r}, cookie_max_age={self.cookie_max_age})"

    def capture(self, query_string: str | bytes, cookie_header: str | bytes | None, *, https: bool) -> CapturedClickId:
        """The click id of a request with this (raw, still percent-encoded) query string and `Cookie` header,
        and the cookie its response should set. Never raises for any input."""
        from_url = _checked(_query_value(query_string), "query parameter")
        from_cookie = _checked(_cookie_value(cookie_header), "cookie")
        if from_url is None or (self.attribution == "first_click" and from_cookie is not None):
            return CapturedClickId(from_cookie, None)
        return CapturedClickId(from_url, ClickIdCookie(from_url, self.cookie_max_age, secure=https))


def click_id_from(
    query_string: str | bytes, cookie_header: str | bytes | None, *, attribution: Attribution = "last_click"
) -> str | None:
    """The request's click id: the `cms_rf` query parameter if it has a valid one, else the `cms_rf` cookie's
    (with `attribution="first_click"`, a valid cookie first). None when neither is valid. Never raises but
    `ValueError` for a bad `attribution`.

    `query_string`: the URL's part after `?`, still percent-encoded. `cookie_header`: the `Cookie` header.
    """
    return ClickIdRules(attribution=attribution).capture(query_string, cookie_header, https=False).click_id


def _query_value(query_string: str | bytes) -> str | None:
    """The first `cms_rf` parameter's decoded value, as the snippet's `URLSearchParams.get` finds it."""
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")  # lossless: anything not ASCII is refused later anyway
    for pair in query_string.split("&"):
        name, _, value = pair.partition("=")
        if unquote_plus(name) == COOKIE_NAME:
            return unquote_plus(value)
    return None


def _cookie_value(cookie_header: str | bytes | None) -> str | None:
    """The first `cms_rf` cookie's value (a browser sends the most specific path first)."""
    if cookie_header is None:
        return None
    if isinstance(cookie_header, bytes):
        cookie_header = cookie_header.decode("latin-1")
    for pair in cookie_header.split(";"):
        name, _, value = pair.partition("=")
        if name.strip() == COOKIE_NAME:
            value = value.strip()
            # RFC 6265 allows a value in double quotes; they are not part of it.
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None


def _checked(value: str | None, source: str) -> str | None:
    if value is None or _CLICK_ID.fullmatch(value):
        return value
    # The value itself stays out of the log: it is whatever a visitor typed, CR/LF included.
    logger.debug(
        "Ignored the %s %s: not 1 to 255 visible ASCII characters allowed in a cookie (%d characters)",
        COOKIE_NAME,
        source,
        len(value),
    )
    return None
