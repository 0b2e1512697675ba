"""Edge cases that once made the SDK raise or leak: each is a way a value, a server or the environment misbehaves."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from cms_python import AsyncCMSClient, CMSClient, _retry
from cms_python._cli import main as cms

from .conftest import LEAD, TOKEN
from .servers import Reply


def test_a_retry_after_date_beyond_any_calendar_is_ignored(face, server, monkeypatch):
    monkeypatch.setattr(_retry, "INITIAL_DELAY", 0.001)
    server.queue(Reply(status=503, body=b"", headers={"Retry-After": "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"}))
    result = face.client(host=server.url).track_lead(**LEAD)
    assert result["success"] is True
    assert len(server.requests) == 2


def test_backoff_stays_capped_after_very_many_retries():
    assert 0.75 * _retry.MAX_DELAY <= _retry.backoff(5000) <= _retry.MAX_DELAY


def test_plain_http_to_loopback_ignores_proxy_variables(face, server, monkeypatch):
    seen: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        result = face.client(host=server.url, max_retries=0).track_lead(**LEAD)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert result["success"] is True
    assert seen == []
    assert len(server.requests) == 1


@pytest.mark.parametrize("token", ["abcdefgh ", " abcdefgh", "abc\tdefgh", "abcdéfgh"])
def test_a_token_that_cannot_be_a_header_value_is_refused_at_construction(face, token):
    with pytest.raises(ValueError, match="token") as raised:
        face.client(token=token, host="http://127.0.0.1:1")
    assert token not in str(raised.value)


@pytest.mark.parametrize(
    "host", ["https://api.cme.sh:abc", "https://a..b", "https://xn--zz.com", "https://" + "a" * 64 + ".com", "https://"]
)
def test_a_host_httpx_or_the_socket_layer_would_refuse_is_refused_at_construction(face, host):
    with pytest.raises(ValueError, match="host"):
        face.client(host=host)


class AmbiguousTruth:
    """Like pandas.NA: comparing is fine, asking whether the comparison is true raises."""

    def __eq__(self, other: object) -> AmbiguousTruth:  # type: ignore[override]
        return self

    __ne__ = __eq__  # type: ignore[assignment]

    def __bool__(self) -> bool:
        raise TypeError("boolean value of NA is ambiguous")

    __hash__ = object.__hash__


@pytest.mark.parametrize("field", ["customer_name", "mode", "click_id", "customer_email"])
def test_values_with_ambiguous_truth_are_validation_errors(client, server, field):
    result = client.track_lead(**{**LEAD, field: AmbiguousTruth()})
    assert result["type"] == "validation_error"
    assert field in result["details"]
    assert server.requests == []


def test_a_token_echoed_in_a_success_body_is_redacted(client, server):
    server.queue(Reply(body={"success": True, "data": {"auth": f"Bearer {TOKEN}", TOKEN: 1}}))
    result = client.track_lead(**LEAD)
    assert result["success"] is True
    assert TOKEN not in json.dumps(result)


def test_the_wrong_kind_of_http_client_is_a_type_error_at_construction():
    with pytest.raises(TypeError, match=r"httpx\.Client"):
        CMSClient(token=TOKEN, http_client=httpx.AsyncClient())  # type: ignore[arg-type]


def test_the_wrong_kind_of_async_http_client_is_a_type_error_at_construction():
    with httpx.Client() as wrong, pytest.raises(TypeError, match=r"httpx\.AsyncClient"):
        AsyncCMSClient(token=TOKEN, http_client=wrong)  # type: ignore[arg-type]


def test_cms_sandbox_refuses_a_port_out_of_range(capsys):
    with pytest.raises(SystemExit) as exit_:
        cms(["sandbox", "--port", "99999"])
    assert exit_.value.code == 2
    assert "0 to 65535" in capsys.readouterr().err
