"""Django: `ClickIdMiddleware` captures the click id into `request.cms_click_id`; `outbox()` is the process's
`Outbox`, configured from settings.

    # settings.py
    MIDDLEWARE = [..., "cms_python.integrations.django.ClickIdMiddleware"]
    CMS_OUTBOX_DATABASE = "default"  # outbox(): in that (PostgreSQL) database, in your transactions; or
    CMS_OUTBOX_PATH = BASE_DIR / "cms-outbox.sqlite3"  # outbox(): in a file (or ":memory:", or a postgresql:// URL)
    CMS_BEARER_TOKEN = ...  # optional: else the CMS_BEARER_TOKEN environment variable
    CMS_HOST = ...  # optional: else CMS_HOST from the environment, then the API's
    CMS_ATTRIBUTION = "last_click"  # or "first_click"
    CMS_COOKIE_MAX_AGE = 90 * 24 * 60 * 60  # seconds

    # views.py
    from cms_python.integrations.django import outbox

    def signup(request):
        with transaction.atomic():
            user = User.objects.create(...)
            outbox().track_lead(click_id=request.cms_click_id, event_name="signup", customer_external_id=user.pk)

With `CMS_OUTBOX_DATABASE`, `outbox().track_*` write the event in the surrounding `transaction.atomic()` of that
database (or commit it at once outside one): a rollback leaves no event, and delivery sees it once it commits.

The middleware works in sync and async stacks alike. The rules are those of `cms_python.integrations` (see
there): a `?cms_rf=` in the URL sets the `cms_rf` cookie, and `request.cms_click_id` is the URL's value, else
the cookie's, else None.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponseBase

from . import COOKIE_NAME, DEFAULT_COOKIE_MAX_AGE, CapturedClickId, ClickIdRules

if TYPE_CHECKING:
    from cms_python import Outbox

__all__ = ["ClickIdMiddleware", "outbox"]

_OUTBOX_SETTINGS = ("CMS_OUTBOX_PATH", "CMS_OUTBOX_DATABASE", "CMS_BEARER_TOKEN", "CMS_HOST")
#: Keys of a database's OPTIONS that are Django's own, not libpq's.
_DJANGO_OPTIONS = ("isolation_level", "server_side_binding", "pool", "assume_role", "cursor_factory")


class ClickIdMiddleware:
    """Sets `request.cms_click_id` and, when the URL brings a click id, the `cms_rf` cookie.

    Reads `CMS_ATTRIBUTION` and `CMS_COOKIE_MAX_AGE` when Django builds the middleware (`ImproperlyConfigured`
    if bad). `Secure` follows `request.is_secure()` (so `SECURE_PROXY_SSL_HEADER` behind a proxy).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        try:
            self.rules = ClickIdRules(
                attribution=getattr(settings, "CMS_ATTRIBUTION", "last_click"),
                cookie_max_age=getattr(settings, "CMS_COOKIE_MAX_AGE", DEFAULT_COOKIE_MAX_AGE),
            )
        except ValueError as exc:
            raise ImproperlyConfigured(f"CutMeShort settings: {exc}") from None
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._call_async(request)
        captured = self._capture(request)
        return _with_cookie(self.get_response(request), captured)

    async def _call_async(self, request: HttpRequest) -> HttpResponseBase:
        captured = self._capture(request)
        return _with_cookie(await self.get_response(request), captured)

    def _capture(self, request: HttpRequest) -> CapturedClickId:
        captured = self.rules.capture(
            request.META.get("QUERY_STRING", ""), request.META.get("HTTP_COOKIE"), https=request.is_secure()
        )
        request.cms_click_id = captured.click_id
        return captured


def _with_cookie(response: HttpResponseBase, captured: CapturedClickId) -> HttpResponseBase:
    if captured.cookie is not None:
        # The morsel as it is: `set_cookie` would quote values that a cookie allows unquoted (`/`, `=`, ...).
        response.cookies[COOKIE_NAME] = captured.cookie.morsel()
    return response


_outbox: Outbox | None = None
_outbox_lock = threading.Lock()


def outbox() -> Outbox:
    """The process's `Outbox`, made on first use from `CMS_OUTBOX_DATABASE` (a database alias: the outbox is kept
    in that PostgreSQL database, and its `track_*` join the current transaction there) or `CMS_OUTBOX_PATH` (a
    file, ":memory:" or a postgresql:// URL), with `CMS_BEARER_TOKEN` and `CMS_HOST`.

    `ImproperlyConfigured` if neither (or both) is set, or the alias is not a PostgreSQL database; `CMSClient`'s
    `ValueError`s for a missing token or a bad host. Changing those settings (`override_settings` in tests)
    closes it; the next call makes another.
    """
    global _outbox  # noqa: PLW0603 - one outbox per process, made on first use
    with _outbox_lock:
        if _outbox is None:
            alias = getattr(settings, "CMS_OUTBOX_DATABASE", None)
            path = getattr(settings, "CMS_OUTBOX_PATH", None)
            credentials = {
                "token": getattr(settings, "CMS_BEARER_TOKEN", None),
                "host": getattr(settings, "CMS_HOST", None),
            }
            if alias is not None and path is None:
                _outbox = _in_database(alias, credentials)
            elif path is not None and alias is None:
                _outbox = _in_file(path, credentials)
            else:
                raise ImproperlyConfigured(
                    'Set CMS_OUTBOX_DATABASE (a database alias, e.g. "default") or CMS_OUTBOX_PATH (the outbox\'s '
                    'file, ":memory:" or a postgresql:// URL), not both'
                )
        return _outbox


def _in_file(path: str | os.PathLike[str], credentials: dict[str, Any]) -> Outbox:
    from cms_python import Outbox  # noqa: PLC0415 - the outbox's storage only for apps that use it

    return Outbox(path, **credentials)


def _in_database(alias: str, credentials: dict[str, Any]) -> Outbox:
    from django.db import connections  # noqa: PLC0415

    from cms_python import Outbox  # noqa: PLC0415 - the outbox's storage only for apps that use it

    class DatabaseOutbox(Outbox):
        """An `Outbox` in a Django database, whose `track_*` write through Django's connection of the calling
        thread, so that they join its current `transaction.atomic()`."""

        def _enqueue(self, request: Any, through: Any) -> Any:
            if through is None:
                through = self._store.through(connections[alias])
            return super()._enqueue(request, through)

    return DatabaseOutbox(_database_url(alias), **credentials)


def _database_url(alias: str) -> str:
    """A postgresql:// URL for the outbox's own connections to the database `alias` (its password in the query,
    where the outbox's labels hide it)."""
    from django.db import connections  # noqa: PLC0415
    from django.utils.connection import ConnectionDoesNotExist  # noqa: PLC0415

    try:
        connection = connections[alias]
    except ConnectionDoesNotExist as exc:
        raise ImproperlyConfigured(f"CMS_OUTBOX_DATABASE: {exc}") from None
    if connection.vendor != "postgresql":
        raise ImproperlyConfigured(
            f"CMS_OUTBOX_DATABASE = {alias!r} is a {connection.vendor} database: the outbox joins PostgreSQL "
            "transactions only (use CMS_OUTBOX_PATH for a file)"
        )
    database = connection.settings_dict
    parameters = {
        "dbname": database.get("NAME"),
        "user": database.get("USER"),
        "password": database.get("PASSWORD"),
        "host": database.get("HOST"),
        "port": database.get("PORT"),
    }
    for name, value in (database.get("OPTIONS") or {}).items():
        if name not in _DJANGO_OPTIONS and isinstance(value, str | int):
            parameters[name] = value
    given = {name: value for name, value in parameters.items() if value not in (None, "")}
    # Spaces as %20: libpq reads "+" as itself ("-c search_path=app", the usual options, would become "-c+search_path").
    return "postgresql:///?" + urlencode(given, quote_via=quote)


def _forget_outbox(*, setting: str, **_: Any) -> None:
    global _outbox
    if setting not in _OUTBOX_SETTINGS:
        return
    with _outbox_lock:
        previous, _outbox = _outbox, None
    if previous is not None:
        previous.close()


setting_changed.connect(_forget_outbox)
