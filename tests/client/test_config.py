"""Configuration (token, host, limits), token hygiene, closing, and a caller's own httpx client."""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from cms_python import DEFAULT_HOST, AsyncCMSClient, CMSClient

from ..conftest import LEAD, TOKEN
from ..support.servers import SUCCESS, Reply

ENV_TOKEN = "env-token-77aa01"


def authorization(server: Any) -> str:
    (request,) = server.requests
    headers = {name.lower(): value for name, value in request.headers.items()}
    return headers["authorization"]


def close(face: Any, client: Any) -> None:
    face.run(client.raw.aclose()) if face.kind == "async" else client.raw.close()


# --- token -------------------------------------------------------------------------------------------------


def test_token_from_environment(face, server, monkeypatch):
    monkeypatch.setenv("CMS_BEARER_TOKEN", ENV_TOKEN)
    client = face.client(token=None, host=server.url)
    assert client.track_lead(**LEAD)["success"] is True
    assert authorization(server) == f"Bearer {ENV_TOKEN}"


def test_token_argument_wins_over_environment(face, server, monkeypatch):
    monkeypatch.setenv("CMS_BEARER_TOKEN", ENV_TOKEN)
    client = face.client(token=TOKEN, host=server.url)
    assert client.track_lead(**LEAD)["success"] is True
    assert authorization(server) == f"Bearer {TOKEN}"


@pytest.mark.parametrize("environment", [None, ""], ids=["unset", "empty"])
def test_no_token_at_all(face, server, monkeypatch, environment):
    if environment is not None:
        monkeypatch.setenv("CMS_BEARER_TOKEN", environment)
    with pytest.raises(ValueError, match="CMS_BEARER_TOKEN"):
        face.client(token=None, host=server.url)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(f"{TOKEN}\nX-Injected: 1", id="newline"),
        pytest.param(f"{TOKEN}\r\n", id="crlf"),
        pytest.param(f"{TOKEN}\x00", id="nul"),
        pytest.param(f"{TOKEN}é", id="non-ascii"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param(TOKEN.encode(), id="bytes"),
    ],
)
def test_bad_token_is_refused_without_echoing_it(face, server, token):
    with pytest.raises(ValueError, match="token") as caught:
        face.client(token=token, host=server.url)
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value)


def test_bad_token_from_environment_is_refused_without_echoing_it(face, server, monkeypatch):
    monkeypatch.setenv("CMS_BEARER_TOKEN", f"{TOKEN}\n")
    with pytest.raises(ValueError, match="token") as caught:
        face.client(token=None, host=server.url)
    assert TOKEN not in str(caught.value)


# --- host --------------------------------------------------------------------------------------------------


def test_default_host(face):
    assert DEFAULT_HOST == "https://api.cme.sh"
    assert face.client().raw.host == "https://api.cme.sh"


def test_host_from_environment(face, server, monkeypatch):
    monkeypatch.setenv("CMS_HOST", server.url)
    client = face.client()
    assert client.raw.host == server.url
    assert client.track_lead(**LEAD)["success"] is True
    assert server.requests[0].path == "/track/lead"


def test_host_argument_wins_over_environment(face, server, monkeypatch):
    monkeypatch.setenv("CMS_HOST", "https://elsewhere.example.com")
    client = face.client(host=server.url)
    assert client.raw.host == server.url
    assert client.track_lead(**LEAD)["success"] is True


@pytest.mark.parametrize("suffix", ["/", "//"])
def test_trailing_slash_is_stripped(face, server, suffix):
    client = face.client(host=server.url + suffix)
    assert client.raw.host == server.url
    assert client.track_lead(**LEAD)["success"] is True
    assert server.requests[0].path == "/track/lead"


def test_host_with_a_path_prefix(face, server):
    client = face.client(host=f"{server.url}/proxy/cms/")
    assert client.track_lead(**LEAD)["success"] is True
    assert server.requests[0].path == "/proxy/cms/track/lead"


@pytest.mark.parametrize(
    "host",
    [
        "http://example.com",
        "http://api.cme.sh",
        "http://10.0.0.1:8080",
        "http://localhost.example.com",
        "ftp://api.cme.sh",
        "api.cme.sh",
        "https://",
        "https://api.cme.sh\r\nX-Injected: 1",
        "https://api .cme.sh",
    ],
)
def test_unsafe_or_malformed_host_is_refused(face, host):
    with pytest.raises(ValueError, match="host"):
        face.client(host=host)


@pytest.mark.parametrize(
    "host",
    [
        "http://svc:hunter2@127.0.0.1:8080",
        "https://svc:hunter2@api.cme.sh",
        "https://hunter2@api.cme.sh/v1",
        "http://svc:hunter2@[::1]:8080",
        "https://svc:hunter2%40x@api.cme.sh",
        "https://svc:hun/ter2@api.cme.sh",  # a password with a slash: not even a URL
        "https://:hunter2@api.cme.sh",
    ],
)
def test_a_host_with_user_info_is_refused_without_showing_the_password(face, monkeypatch, host):
    # Basic auth would replace the Bearer token, and the password would show in repr() and httpx's log.
    with pytest.raises(ValueError, match="host") as raised:
        face.client(host=host)
    assert "hunter2" not in str(raised.value)
    monkeypatch.setenv("CMS_HOST", host)
    with pytest.raises(ValueError, match="host") as raised:
        face.client()
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    "host",
    [
        "https://api.cme.sh?x=1",
        "https://api.cme.sh/?x=1",
        "https://api.cme.sh#top",
        "https://api.cme.sh/v1?",
        "https://api.cme.sh/#",
        "http://127.0.0.1:8080/?token=x",
    ],
)
def test_a_host_with_a_query_or_a_fragment_is_refused(face, host):
    # https://api.cme.sh?x=1 would post to /?x=1/track/lead.
    with pytest.raises(ValueError, match="query or a fragment"):
        face.client(host=host)


@pytest.mark.parametrize(
    "host",
    [
        "http://127.0.0.1:0",
        "http://127.0.0.1:65536",
        "https://api.cme.sh:99999999999",
        "http://[::1]:0",
        "http://localhost:+80",
        "https://api.cme.sh:-1",
    ],
)
def test_a_host_with_a_port_outside_1_to_65535_is_refused(face, host):
    with pytest.raises(ValueError, match="port"):
        face.client(host=host)


def test_plain_http_host_from_environment_is_refused(face, monkeypatch):
    monkeypatch.setenv("CMS_HOST", "http://example.com")
    with pytest.raises(ValueError, match="http"):
        face.client()


@pytest.mark.parametrize(
    "host",
    [
        "http://localhost:1",
        "http://127.0.0.1:1",
        "http://127.0.0.5:1",
        "http://[::1]:1",
        "https://example.com",
        "https://custom.com",
        "https://api.cme.sh:8443",
        "http://127.0.0.1:65535",
        "https://api.cme.sh:443/v1",
        "https://api.cme.sh/@handle",  # an "@" in the path is no user info
    ],
)
def test_allowed_hosts(face, host):
    assert face.client(host=host).raw.host == host


# --- limits ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"max_retries": True},
        {"max_retries": "2"},
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": float("inf")},
        {"timeout": float("nan")},
        {"timeout": True},
        {"timeout": "10"},
    ],
    ids=repr,
)
def test_bad_limits_are_refused(face, server, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        face.client(host=server.url, **kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"max_retries": 0}, {"max_retries": 5}, {"timeout": 0.5}, {"timeout": httpx.Timeout(2.0)}], ids=repr
)
def test_good_limits_are_accepted(face, server, kwargs):
    assert face.client(host=server.url, **kwargs).track_lead(**LEAD)["success"] is True


# --- token hygiene -----------------------------------------------------------------------------------------


def test_repr_and_str_do_not_show_the_token(client):
    assert TOKEN not in repr(client.raw)
    assert TOKEN not in str(client.raw)
    assert TOKEN not in f"{client.raw!r} {client.raw!s}"


def test_logs_never_contain_the_token(client, server, caplog):
    caplog.set_level(logging.DEBUG)  # every logger: cms_python, httpx, httpcore
    caplog.set_level(logging.DEBUG, logger="cms_python")
    server.queue(
        Reply(status=200),
        Reply(status=401, body={"success": False, "error": f"bad token Bearer {TOKEN}", "type": "auth"}),
    )
    assert client.track_lead(**LEAD)["success"] is True
    assert client.track_lead(**LEAD)["success"] is False
    assert any(record.name == "cms_python" for record in caplog.records)
    assert TOKEN not in caplog.text
    for record in caplog.records:
        assert TOKEN not in record.getMessage()


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            Reply(status=401, body={"success": False, "error": f"bad token Bearer {TOKEN}", "type": "auth"}),
            id="401-error",
        ),
        pytest.param(
            Reply(
                status=403,
                body={
                    "error": "forbidden",
                    "type": f"auth:{TOKEN}",
                    "details": {"authorization": f"Bearer {TOKEN}", "seen": [TOKEN, {"again": TOKEN}]},
                },
            ),
            id="403-details",
        ),
        pytest.param(
            Reply(status=401, body={"error": "bad token", "details": {f"Bearer {TOKEN}": "invalid"}}),
            id="401-token-as-details-key",
        ),
        pytest.param(Reply(status=200, body={"success": False, "error": f"Bearer {TOKEN} is revoked"}), id="200-false"),
        pytest.param(
            Reply(status=302, body=b"", headers={"Location": f"https://login.example.com/?token={TOKEN}"}),
            id="302-location",
        ),
    ],
)
def test_token_echoed_by_the_server_is_not_in_the_result(face, server, caplog, reply):
    client = face.client(host=server.url, max_retries=0)
    server.queue(reply)
    result = client.track_lead(**LEAD)
    assert result["success"] is False
    assert result["status_code"] == reply.status
    assert TOKEN not in json.dumps(result)
    assert TOKEN not in caplog.text


# --- closing -----------------------------------------------------------------------------------------------


def test_context_manager(face, server):
    if face.kind == "sync":
        with CMSClient(token=TOKEN, host=server.url) as entered:
            result = entered.track_lead(**LEAD)
        sdk = entered
    else:

        async def use() -> tuple[AsyncCMSClient, Any]:
            async with AsyncCMSClient(token=TOKEN, host=server.url) as entered:
                return entered, await entered.track_lead(**LEAD)

        sdk, result = face.run(use())
    assert isinstance(sdk, CMSClient if face.kind == "sync" else AsyncCMSClient)
    assert result["success"] is True
    assert len(server.requests) == 1
    assert own_httpx_client(sdk).is_closed


def test_close_is_idempotent(face, client):
    assert client.track_lead(**LEAD)["success"] is True
    close(face, client)
    close(face, client)
    assert own_httpx_client(client.raw).is_closed


def own_httpx_client(sdk: Any) -> httpx.Client | httpx.AsyncClient:
    """The httpx client the SDK built for itself (private: only to check that closing closed it)."""
    api = sdk._api
    return api.get_async_httpx_client() if isinstance(sdk, AsyncCMSClient) else api.get_httpx_client()


# --- a caller's own httpx client ---------------------------------------------------------------------------


class Recorder:
    """A MockTransport handler: records each request, answers from `replies` (then 200 SUCCESS)."""

    def __init__(self, *replies: httpx.Response) -> None:
        self.requests: list[httpx.Request] = []
        self.replies = list(replies)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.replies.pop(0) if self.replies else httpx.Response(200, json=SUCCESS)


@pytest.fixture
def callers_client(face: Any) -> Iterator[tuple[Recorder, httpx.Client | httpx.AsyncClient]]:
    """The caller's own httpx client of the face's kind, with settings the SDK must not pick up."""
    recorder = Recorder()
    settings: dict[str, Any] = {
        "transport": httpx.MockTransport(recorder),
        "base_url": "https://wrong.example.com/other/",
        "headers": {"Authorization": "Bearer callers-own-token", "X-Caller": "yes"},
        "follow_redirects": True,
    }
    own = httpx.AsyncClient(**settings) if face.kind == "async" else httpx.Client(**settings)
    yield recorder, own
    face.run(own.aclose()) if isinstance(own, httpx.AsyncClient) else own.close()


def test_callers_http_client_is_used(face, callers_client):
    recorder, own = callers_client
    client = face.client(host="https://api.example.com", http_client=own)
    result = client.track_lead(**LEAD)
    assert result == SUCCESS
    (request,) = recorder.requests
    assert (request.method, str(request.url)) == ("POST", "https://api.example.com/track/lead")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("cms-python-client/")
    assert request.headers["x-cms-sdk-runtime"] == "python"
    assert "idempotency-key" in request.headers
    assert json.loads(request.content) == {
        "clickId": "id_123",
        "eventName": "signup_started",
        "customerExternalId": "user_42",
    }


def test_callers_http_client_is_not_closed(face, callers_client):
    recorder, own = callers_client
    client = face.client(host="https://api.example.com", http_client=own)
    assert client.track_lead(**LEAD)["success"] is True
    close(face, client)
    assert not own.is_closed
    # Still usable by its owner.
    response = face.run(own.get("https://api.example.com/ping"))
    assert response.status_code == 200
    assert len(recorder.requests) == 2


def test_callers_http_client_does_not_follow_redirects(face, callers_client):
    recorder, own = callers_client
    recorder.replies.append(httpx.Response(302, headers={"Location": "https://api.example.com/track/lead"}))
    client = face.client(host="https://api.example.com", http_client=own, max_retries=0)
    result = client.track_lead(**LEAD)
    assert result["success"] is False
    assert result["status_code"] == 302
    assert result["type"] == "http_error"
    assert len(recorder.requests) == 1


def test_callers_http_client_error_status(face, callers_client):
    recorder, own = callers_client
    recorder.replies.append(httpx.Response(422, json={"error": "Validation failed", "type": "validation"}))
    client = face.client(host="https://api.example.com", http_client=own)
    assert client.track_lead(**LEAD) == {
        "success": False,
        "error": "Validation failed",
        "status_code": 422,
        "type": "validation",
        "details": None,
    }


@pytest.mark.parametrize("name", ["host", "max_retries", "timeout"])
def test_settings_are_read_only(face, server, name):
    client = face.client(host=server.url).raw
    before = getattr(client, name)
    with pytest.raises(AttributeError):
        setattr(client, name, "https://elsewhere.example")
    assert getattr(client, name) == before


def test_methods_are_named_after_their_class(face):
    client = face.client().raw
    kind = type(client).__name__
    assert client.track_lead.__qualname__ == f"{kind}.track_lead"
    assert client.track_sale.__qualname__ == f"{kind}.track_sale"
    assert f"{kind}.track_sale" in repr(client.track_sale)


class Proxy:
    """An HTTP proxy on 127.0.0.1 that answers 502 to everything; `seen` records each request line and its
    Authorization header."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                seen.append((self.requestline, self.headers.get("Authorization", "")))
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_CONNECT = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def env_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    """A proxy that the environment names for every scheme, with nothing exempted."""
    proxy = Proxy()
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    yield proxy
    proxy.close()


@pytest.mark.parametrize("spelling", ["http://127.0.0.1", "HTTP://127.0.0.1", "Http://localhost"])
def test_plain_http_to_loopback_ignores_proxy_variables(face, server, env_proxy, spelling):
    client = face.client(host=f"{spelling}:{server.port}", max_retries=0)
    assert client.raw.host == f"{spelling.lower()}:{server.port}"
    assert client.track_lead(**LEAD)["success"] is True
    assert env_proxy.seen == []
    assert len(server.requests) == 1


@pytest.mark.parametrize("spelling", ["http://127.0.0.1", "HTTP://127.0.0.1"])
def test_plain_http_through_a_callers_client_ignores_its_environment_proxies(face, server, env_proxy, spelling):
    # httpx.Client() trusts the environment by default: it took the proxies when it was made.
    callers = httpx.AsyncClient() if face.kind == "async" else httpx.Client()
    try:
        client = face.client(host=f"{spelling}:{server.port}", http_client=callers, max_retries=0)
        assert client.track_lead(**LEAD)["success"] is True
    finally:
        face.run(callers.aclose()) if face.kind == "async" else callers.close()
    assert env_proxy.seen == []
    assert authorization(server) == f"Bearer {TOKEN}"


def test_https_goes_through_the_environments_proxy_as_a_tunnel(face, env_proxy):
    result = face.client(host="https://api.example.com", max_retries=0).track_lead(**LEAD)
    assert result["type"] == "network_error"  # the proxy refused the tunnel
    assert env_proxy.seen == [("CONNECT api.example.com:443 HTTP/1.1", "")]


@pytest.mark.skipif(importlib.util.find_spec("socksio") is not None, reason="socksio is installed: SOCKS works")
def test_a_socks_proxy_in_the_environment_without_socksio_is_a_value_error(face, monkeypatch):
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ValueError, match=r"proxy set in the environment .*socksio"):
        face.client(host="https://api.example.com")
    # A loopback host never uses proxies: nothing to refuse.
    assert face.client(host="http://127.0.0.1:1").raw.host == "http://127.0.0.1:1"


@pytest.mark.parametrize("value", ["http://user:hunter2", "ftp://user:hunter2@proxy.example", "http://[::1"])
def test_an_unusable_proxy_url_in_the_environment_is_a_value_error_that_hides_it(face, monkeypatch, value):
    monkeypatch.setenv("HTTPS_PROXY", value)
    with pytest.raises(ValueError, match="proxy set in the environment") as raised:
        face.client(host="https://api.example.com")
    assert "hunter2" not in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


# --- a caller's client with a `raise_for_status` hook; cookies ----------------------------------------------------


def raising_client(face: Any) -> httpx.Client | httpx.AsyncClient:
    """A caller's httpx client with the common hook that raises for every 4xx and 5xx."""
    if face.kind == "async":

        async def check(response: httpx.Response) -> None:
            response.raise_for_status()

        return httpx.AsyncClient(event_hooks={"response": [check]})
    return httpx.Client(event_hooks={"response": [lambda response: response.raise_for_status()]})


def test_a_raise_for_status_hook_does_not_stop_a_retry(face, server):
    server.queue(Reply(status=503, body={"success": False, "error": "busy"}))
    callers = raising_client(face)
    try:
        result = face.client(host=server.url, http_client=callers).track_lead(**LEAD)
    finally:
        face.run(callers.aclose()) if face.kind == "async" else callers.close()
    assert result == SUCCESS
    assert len(server.requests) == 2


def test_a_raise_for_status_hook_keeps_the_errors_details(face, server):
    details = {"customer_email": "not an email"}
    body = {"success": False, "error": "Invalid", "type": "validation", "details": details}
    server.default = Reply(status=422, body=body)
    callers = raising_client(face)
    try:
        result = face.client(host=server.url, http_client=callers).track_lead(**LEAD)
    finally:
        face.run(callers.aclose()) if face.kind == "async" else callers.close()
    assert result == {**body, "status_code": 422}
    assert len(server.requests) == 1


def test_a_callers_hooks_see_the_request_and_the_read_response(face, server):
    seen: list[Any] = []
    if face.kind == "async":

        async def on_request(request: httpx.Request) -> None:
            seen.append(request.headers["idempotency-key"])

        async def on_response(response: httpx.Response) -> None:
            seen.append(response.json())

    else:
        on_request = lambda request: seen.append(request.headers["idempotency-key"])  # noqa: E731
        on_response = lambda response: seen.append(response.json())  # noqa: E731
    hooks = {"request": [on_request], "response": [on_response]}
    callers = httpx.AsyncClient(event_hooks=hooks) if face.kind == "async" else httpx.Client(event_hooks=hooks)
    try:
        assert face.client(host=server.url, http_client=callers).track_lead(**LEAD) == SUCCESS
    finally:
        face.run(callers.aclose()) if face.kind == "async" else callers.close()
    assert seen == [server.requests[0].headers["Idempotency-Key"], SUCCESS]


@pytest.mark.parametrize("through", [False, True], ids=["own-client", "callers-client"])
def test_cookies_are_never_kept(face, server, through):
    # A server setting a new cookie on each answer used to grow every request's headers until a 431.
    server.queue(*(Reply(headers={"Set-Cookie": f"c{n}=v{n}; Path=/"}) for n in range(5)))
    callers = (httpx.AsyncClient() if face.kind == "async" else httpx.Client()) if through else None
    try:
        client = face.client(host=server.url, http_client=callers)
        for _ in range(5):
            assert client.track_lead(**LEAD)["success"] is True
    finally:
        if callers is not None:
            face.run(callers.aclose()) if face.kind == "async" else callers.close()
    assert len(server.requests) == 5
    assert [name for request in server.requests for name in request.headers if name.lower() == "cookie"] == []


@pytest.mark.parametrize("token", ["abcdefgh ", " abcdefgh", "abc\tdefgh", "abcdéfgh"])
def test_a_token_that_cannot_be_a_header_value_is_refused_at_construction(face, token):
    with pytest.raises(ValueError, match="token") as raised:
        face.client(token=token, host="http://127.0.0.1:1")
    assert token not in str(raised.value)


@pytest.mark.parametrize(
    "host",
    [
        "https://api.cme.sh:abc",
        "https://a..b",
        "https://xn--zz.com",
        "https://" + "a" * 64 + ".com",
        "https://",
        "https://api.cme.sh\\evil.com",
        "http://127.0.0.1:8080\\@evil.com",
    ],
)
def test_a_host_httpx_or_the_socket_layer_would_refuse_is_refused_at_construction(face, host):
    with pytest.raises(ValueError, match="host"):
        face.client(host=host)


def test_the_wrong_kind_of_http_client_is_a_type_error_at_construction():
    with pytest.raises(TypeError, match=r"httpx\.Client"):
        CMSClient(token=TOKEN, http_client=httpx.AsyncClient())  # type: ignore[arg-type]


def test_the_wrong_kind_of_async_http_client_is_a_type_error_at_construction():
    with httpx.Client() as wrong, pytest.raises(TypeError, match=r"httpx\.AsyncClient"):
        AsyncCMSClient(token=TOKEN, http_client=wrong)  # type: ignore[arg-type]
