"""The SDK's own httpx clients join each relative path with `base_url` once: the URL must be httpx's own."""

from __future__ import annotations

import httpx
import pytest

from cms_python import AsyncCMSClient, CMSClient
from cms_python._http import OwnAsyncClient, OwnClient

from ..conftest import TOKEN

BASES = [
    "http://127.0.0.1:8000",
    "https://api.cme.sh",
    "https://api.example.com/prefix",
    "https://api.example.com/prefix/",
    "http://[::1]:9/a%20b",
    "https://api.example.com?q=1",
    "https://user:secret@api.example.com:8443/p",
]
PATHS = ["/track/lead", "/track/sale", "/a b", "/\u00fc", "/x?y=1"]


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("own_class", [OwnClient, OwnAsyncClient])
def test_joined_url_is_httpx_own(base: str, own_class: type[OwnClient] | type[OwnAsyncClient]) -> None:
    own = own_class(base_url=base)
    plain = httpx.Client(base_url=base)
    for path in PATHS * 2:  # the second time from the cache
        joined = own._joined_paths.url(own, path)
        expected = plain.build_request("POST", path).url
        assert joined == expected
        assert joined.raw_path == expected.raw_path
    # A new base_url is a new object: the cached URLs give way.
    own.base_url = plain.base_url = "https://other.example.com/z"
    assert own._joined_paths.url(own, "/track/lead") == plain.build_request("POST", "/track/lead").url


def test_absolute_and_url_objects_pass_through() -> None:
    own = OwnClient(base_url="https://api.cme.sh")
    url = httpx.URL("https://elsewhere.example.com/x")
    assert own._joined_paths.url(own, url) is url
    assert own._joined_paths.url(own, "https://elsewhere.example.com/x") == "https://elsewhere.example.com/x"


def test_paths_past_the_cap_are_joined_per_request() -> None:
    own = OwnClient(base_url="https://api.cme.sh/v1")
    for number in range(40):
        path = f"/p{number}"
        assert own._joined_paths.url(own, path) in (path, httpx.URL(f"https://api.cme.sh/v1/p{number}"))
        assert own.build_request("POST", path).url == httpx.URL(f"https://api.cme.sh/v1/p{number}")


def test_faces_build_their_own_clients() -> None:
    sync = CMSClient(token=TOKEN, host="https://api.example.com/base")
    asynchronous = AsyncCMSClient(token=TOKEN, host="https://api.example.com/base")
    assert isinstance(sync._api.get_httpx_client(), OwnClient)
    assert isinstance(asynchronous._api.get_async_httpx_client(), OwnAsyncClient)
    sync.close()


def test_requests_reach_the_joined_url(face, server):
    client = face.client(host=server.url + "/prefix")
    for _ in range(2):
        assert client.track_lead(event_name="signup_started", customer_external_id="user_42")["success"] is True
    assert [request.path for request in server.requests] == ["/prefix/track/lead"] * 2
