"""The httpx clients a `CMSClient` and an `AsyncCMSClient` build for themselves."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Generic, TypeVar, cast

import httpx

from .body import Decoder
from .deadline import AsyncDeadlineBackend, DeadlineBackend, attempt_budget, end_attempt, start_attempt
from .internals import wrap_network_backends
from .passthrough import ThroughAsyncClient, ThroughClient

#: More distinct relative paths than the API has: past this, paths are joined with `base_url` per request again.
_MAX_PATHS = 16

_Through = TypeVar("_Through", ThroughClient, ThroughAsyncClient)


class _NotFollowed(Exception):
    """Ends httpx's handling of a redirect once its body is read: httpx would prepare the next request, parsing
    `Location` (a bad one raises), although the SDK never follows it."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response


class _JoinedPaths:
    """`base_url` joined with each relative path once, by httpx itself (`build_request`).

    The generated code sends to fixed relative paths (`/track/lead`); httpx parses and joins such a path with
    `base_url` on every request, about half of the SDK's own work per call. An `httpx.URL` is immutable, so
    the joined one serves until `base_url` changes (a new object); sending it skips httpx's parsing.
    """

    __slots__ = ("_urls",)

    def __init__(self) -> None:
        self._urls: dict[str, tuple[httpx.URL, httpx.URL]] = {}

    def url(self, client: httpx.Client | httpx.AsyncClient, url: httpx.URL | str) -> httpx.URL | str:
        if not isinstance(url, str) or not url.startswith("/"):
            return url
        base = client.base_url
        joined = self._urls.get(url)
        if joined is not None and joined[0] is base:
            return joined[1]
        if len(self._urls) >= _MAX_PATHS:
            return url
        self._urls[url] = (base, client.build_request("POST", url).url)
        return self._urls[url][1]


class _Own(Generic[_Through]):
    """What `OwnClient` and `OwnAsyncClient` share: everything but sending and reading."""

    #: The response hook, each twin's own: reads the body whole, bounded, then runs the caller's hooks.
    _read: Callable[[httpx.Response], Any]

    def __init__(
        self, settings: dict[str, Any], through_type: type[_Through], deadline_backend: Callable[[Any], object]
    ) -> None:
        transport = settings.get("transport")
        self._through: _Through | None = transport if isinstance(transport, through_type) else None
        _construct(super().__init__, settings, self._read)
        own = cast(httpx.Client | httpx.AsyncClient, self)  # each twin is one
        self._joined_paths = _JoinedPaths()
        self._budget = attempt_budget(own.timeout)
        if transport is None:  # its own pools (its own and its proxies') end every wait by the attempt's deadline
            wrap_network_backends(own, deadline_backend)

    @staticmethod
    def _not_followed(response: httpx.Response) -> None:
        """End httpx's handling of a redirect, once its body is read and the caller's hooks ran."""
        if response.has_redirect_location:
            raise _NotFollowed(response)


class OwnClient(_Own[ThroughClient], httpx.Client):
    """The `httpx.Client` a `CMSClient` builds for itself (`transport`: a `ThroughClient`, or None for its own
    connection pool). Requests to relative paths reuse the joined URL; every answer is read as the wing says."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(settings, ThroughClient, DeadlineBackend)

    def request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return super().request(method, self._joined_paths.url(self, url), **kwargs)

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        attempt = start_attempt(self._budget)
        try:
            return super().send(request, **kwargs)
        except _NotFollowed as redirect:
            return redirect.response
        finally:
            end_attempt(attempt)

    def _read(self, response: httpx.Response) -> None:
        decoder = Decoder(response)
        # Closed here, not whenever the garbage collector gets to it, when the reading stops early.
        chunks = cast(Generator[bytes, None, None], response.iter_raw())
        try:
            for chunk in chunks:
                decoder.feed(chunk)
            decoder.finish()
        except (httpx.HTTPError, MemoryError) as exc:
            raise decoder.failure(exc) from exc
        finally:
            chunks.close()
        if self._through is not None:
            self._through.inspect(response)
        self._not_followed(response)


class OwnAsyncClient(_Own[ThroughAsyncClient], httpx.AsyncClient):
    """The `httpx.AsyncClient` counterpart of `OwnClient`."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(settings, ThroughAsyncClient, AsyncDeadlineBackend)

    async def request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return await super().request(method, self._joined_paths.url(self, url), **kwargs)

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        attempt = start_attempt(self._budget)
        try:
            return await super().send(request, **kwargs)
        except _NotFollowed as redirect:
            return redirect.response
        finally:
            end_attempt(attempt)

    async def _read(self, response: httpx.Response) -> None:
        decoder = Decoder(response)
        # Closed here: left to the event loop, an unfinished one outlives a loop closed meanwhile.
        chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw())
        try:
            async for chunk in chunks:
                decoder.feed(chunk)
            decoder.finish()
        except (httpx.HTTPError, MemoryError) as exc:
            raise decoder.failure(exc) from exc
        finally:
            await chunks.aclose()
        if self._through is not None:
            await self._through.inspect(response)
        self._not_followed(response)


def _construct(init: Callable[..., None], settings: dict[str, Any], read: Callable[[httpx.Response], Any]) -> None:
    """httpx's constructor with the SDK's fixed settings; an unusable proxy from the environment is a ValueError."""
    try:
        init(
            **settings,
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),  # takes no cookie from anyone
            event_hooks={"response": [read]},
        )
    except (ImportError, ValueError, httpx.InvalidURL) as exc:
        if not settings.get("trust_env", True):
            raise
        # The proxy URL may hold a password: the message names the variables, not their values.
        reason = str(exc) if isinstance(exc, ImportError) else "it is not a valid proxy URL"
        raise ValueError(
            f"The proxy set in the environment (HTTPS_PROXY, ALL_PROXY or another *_PROXY variable) cannot be "
            f"used: {reason}"
        ) from None
