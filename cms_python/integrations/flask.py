"""Flask: the `CMS` extension captures the click id into `g.cms_click_id` and gives the app one `Outbox`.

    from flask import Flask, g
    from cms_python.integrations.flask import CMS

    app = Flask(__name__)
    app.config["CMS_OUTBOX_PATH"] = "cms-outbox.sqlite3"  # CMS_BEARER_TOKEN, CMS_HOST: else the environment's
    cms = CMS(app)  # or cms = CMS(); cms.init_app(app)

    @app.post("/signup")
    def signup():
        cms.outbox.track_lead(click_id=g.cms_click_id, event_name="signup", customer_external_id=user.id)
        ...

The rules are those of `cms_python.integrations` (see there): a `?cms_rf=` in the URL sets the `cms_rf`
cookie, and `g.cms_click_id` is the URL's value, else the cookie's, else None.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from flask import Flask, Response, current_app, g, request

from . import DEFAULT_COOKIE_MAX_AGE, Attribution, ClickIdRules

if TYPE_CHECKING:
    from cms_python import Outbox

__all__ = ["CMS"]

_EXTENSION = "cms"


class CMS:
    """The Flask extension. `attribution` and `cookie_max_age` are `ClickIdRules`' (`ValueError` if bad).

    The outbox is configured from `app.config`: `CMS_OUTBOX_PATH` (required: a file, or `":memory:"`),
    `CMS_BEARER_TOKEN` and `CMS_HOST` (when absent, the environment variables of the same names, as
    `CMSClient` reads them). It is made on first use of `cms.outbox`, once per app in the process.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        attribution: Attribution = "last_click",
        cookie_max_age: int = DEFAULT_COOKIE_MAX_AGE,
    ) -> None:
        self.rules = ClickIdRules(attribution=attribution, cookie_max_age=cookie_max_age)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Capture the click id on each of `app`'s requests, and give `app` its outbox slot."""
        app.extensions[_EXTENSION] = _OutboxSlot()
        app.before_request(self._capture)
        app.after_request(self._set_cookie)

    @property
    def outbox(self) -> Outbox:
        """The current app's `Outbox` (made from `app.config` on first use); needs an app context.

        `RuntimeError` if `CMS_OUTBOX_PATH` is not set; the `ValueError`s of `CMSClient` for a missing token or
        bad host."""
        slot: _OutboxSlot = current_app.extensions[_EXTENSION]
        return slot.get(current_app)

    def _capture(self) -> None:
        captured = self.rules.capture(request.query_string, request.headers.get("Cookie"), https=request.is_secure)
        g.cms_click_id = captured.click_id
        g._cms_click_id_cookie = captured.cookie

    def _set_cookie(self, response: Response) -> Response:
        cookie = g.get("_cms_click_id_cookie")
        if cookie is not None:
            response.headers.add("Set-Cookie", cookie.header())
        return response


class _OutboxSlot:
    """One app's outbox, made once even when the first requests come in together."""

    def __init__(self) -> None:
        self._outbox: Outbox | None = None
        self._lock = threading.Lock()

    def get(self, app: Flask) -> Outbox:
        with self._lock:
            if self._outbox is None:
                from cms_python import Outbox  # noqa: PLC0415 - the outbox's storage only for apps that use it

                if "CMS_OUTBOX_PATH" not in app.config:
                    raise RuntimeError('set app.config["CMS_OUTBOX_PATH"]: the outbox\'s file, or ":memory:"')
                self._outbox = Outbox(
                    app.config["CMS_OUTBOX_PATH"],
                    token=app.config.get("CMS_BEARER_TOKEN"),
                    host=app.config.get("CMS_HOST"),
                )
            return self._outbox
