"""Starlette and FastAPI: `ClickIdMiddleware` captures the click id into `request.state.cms_click_id`;
`cms_lifespan` gives the app one `Outbox` for its lifetime, and `cms_outbox` hands it to handlers.

    from typing import Annotated
    from fastapi import Depends, FastAPI, Request
    from cms_python import Outbox
    from cms_python.integrations.starlette import ClickIdMiddleware, cms_lifespan, cms_outbox

    app = FastAPI(lifespan=cms_lifespan("cms-outbox.sqlite3"))  # token and host: CMS_BEARER_TOKEN, CMS_HOST
    app.add_middleware(ClickIdMiddleware)  # attribution="first_click", cookie_max_age=...

    @app.post("/signup")
    async def signup(request: Request, outbox: Annotated[Outbox, Depends(cms_outbox)]):
        outbox.track_lead(click_id=request.state.cms_click_id, event_name="signup", customer_external_id=...)

The rules are those of `cms_python.integrations` (see there): a `?cms_rf=` in the URL sets the `cms_rf`
cookie, and `request.state.cms_click_id` is the URL's value, else the cookie's, else None.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import DEFAULT_COOKIE_MAX_AGE, Attribution, ClickIdRules

if TYPE_CHECKING:
    from cms_python import Outbox

__all__ = ["ClickIdMiddleware", "cms_lifespan", "cms_outbox"]

_CLICK_ID_STATE = "cms_click_id"
_OUTBOX_STATE = "cms_outbox"


class ClickIdMiddleware:
    """Pure ASGI middleware (streaming responses untouched). `attribution` and `cookie_max_age` are
    `ClickIdRules`' (`ValueError` if bad). `Secure` is added when the request's scheme is https (behind a
    proxy, let the server set it from the proxy's headers, e.g. uvicorn's `--proxy-headers`)."""

    def __init__(
        self, app: ASGIApp, *, attribution: Attribution = "last_click", cookie_max_age: int = DEFAULT_COOKIE_MAX_AGE
    ) -> None:
        self.app = app
        self.rules = ClickIdRules(attribution=attribution, cookie_max_age=cookie_max_age)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # HTTP/2 may split the cookies over several headers.
        cookie_header = b"; ".join(value for name, value in scope["headers"] if name == b"cookie")
        captured = self.rules.capture(
            scope.get("query_string", b""), cookie_header, https=scope.get("scheme") == "https"
        )
        scope.setdefault("state", {})[_CLICK_ID_STATE] = captured.click_id
        if captured.cookie is None:
            await self.app(scope, receive, send)
            return
        set_cookie = (b"set-cookie", captured.cookie.header().encode("latin-1"))

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), set_cookie]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def cms_lifespan(
    path: str | os.PathLike[str], *, token: str | None = None, host: str | None = None
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for `Starlette(lifespan=...)` / `FastAPI(lifespan=...)`: opens an `Outbox(path, token, host)`
    at startup (token and host default to `CMS_BEARER_TOKEN` and `CMS_HOST`, as for `CMSClient`), hands it to
    `cms_outbox`, and closes it at shutdown.

    With a lifespan of your own, enter this one inside it and pass its state on:

        @asynccontextmanager
        async def lifespan(app):
            async with cms_lifespan("cms-outbox.sqlite3")(app) as cms_state:
                yield {**cms_state, "db": ...}
    """

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        from cms_python import Outbox  # noqa: PLC0415 - the outbox's storage only for apps that use it

        # Opening and closing touch the disk and wait for delivery: not on the event loop.
        outbox = await anyio.to_thread.run_sync(lambda: Outbox(path, token=token, host=host))
        try:
            yield {_OUTBOX_STATE: outbox}
        finally:
            await anyio.to_thread.run_sync(outbox.close)

    return lifespan


def cms_outbox(request: Request) -> Outbox:
    """The app's `Outbox`, for `Depends(cms_outbox)`; `RuntimeError` if the app was not given `cms_lifespan`."""
    outbox: Outbox | None = request.scope.get("state", {}).get(_OUTBOX_STATE)
    if outbox is None:
        raise RuntimeError("No CutMeShort outbox: create the app with lifespan=cms_lifespan(...)")
    return outbox
