"""The httpx and httpcore private names the SDK uses, all in cms_python/_http/internals.py, are there in the
installed versions and still do what the SDK relies on: a release that renames one fails here, naming it, rather
than as deadlines silently lost or every call raising AttributeError."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import httpcore
import httpx
import pytest

import cms_python
from cms_python._http import internals

PROXY = "http://127.0.0.1:9"

#: Each private name `internals` uses, with fresh objects of the installed httpx and httpcore that must have it.
HOLDERS: dict[str, list[tuple[str, Callable[[], object]]]] = {
    "_transport": [("httpx.Client", httpx.Client), ("httpx.AsyncClient", httpx.AsyncClient)],
    "_transport_for_url": [("httpx.Client", httpx.Client), ("httpx.AsyncClient", httpx.AsyncClient)],
    "_mounts": [("httpx.Client", httpx.Client), ("httpx.AsyncClient", httpx.AsyncClient)],
    "_pool": [("httpx.HTTPTransport", httpx.HTTPTransport), ("httpx.AsyncHTTPTransport", httpx.AsyncHTTPTransport)],
    "_network_backend": [
        ("httpcore.ConnectionPool", httpcore.ConnectionPool),
        ("httpcore.AsyncConnectionPool", httpcore.AsyncConnectionPool),
        ("httpcore.HTTPProxy", lambda: httpcore.HTTPProxy(proxy_url=PROXY)),
        ("httpcore.AsyncHTTPProxy", lambda: httpcore.AsyncHTTPProxy(proxy_url=PROXY)),
    ],
    "_content": [("httpx.Response", lambda: httpx.Response(200, content=b"{}"))],
}
VERSIONS = f"httpx {httpx.__version__}, httpcore {httpcore.__version__}"


def private_names(path: Path, *, but_on_self: bool) -> set[str]:
    """The private attributes the module at `path` uses, as `x._name` or `getattr(x, "_name")` and the like (not
    dunders; with `but_on_self`, not those of `self`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute):
            owner, name = node.value, node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            owner, name = node.args[0], node.args[1].value
        else:
            continue
        on_self = isinstance(owner, ast.Name) and owner.id == "self"
        if name.startswith("_") and not name.startswith("__") and not (but_on_self and on_self):
            names.add(name)
    return names


@pytest.mark.parametrize(
    ("name", "holder", "make"),
    [(name, holder, make) for name, holders in HOLDERS.items() for holder, make in holders],
)
def test_each_private_name_is_there(name: str, holder: str, make: Callable[[], object]) -> None:
    assert hasattr(make(), name), (
        f"{holder} has no attribute {name!r} in {VERSIONS}: cms_python/_http/internals.py uses it, "
        "so the SDK needs a change for this version"
    )


def test_the_list_above_is_what_internals_uses() -> None:
    assert private_names(Path(internals.__file__), but_on_self=False) == set(HOLDERS)


def test_no_other_module_uses_them() -> None:
    package = Path(cms_python.__file__).parent
    for path in package.rglob("*.py"):
        if path != Path(internals.__file__):
            used = private_names(path, but_on_self=True) & set(HOLDERS)
            assert not used, f"{path.relative_to(package)} uses {sorted(used)}: only _http/internals.py may"


def test_the_transports_are_the_ones_httpx_sends_through() -> None:
    own, mounted = httpx.MockTransport(lambda _: httpx.Response(204)), httpx.MockTransport(httpx.Response)
    with httpx.Client(transport=own, mounts={"https://elsewhere.example": mounted}) as client:
        assert internals.own_transport(client) is own
        assert internals.transport_for_url(client, httpx.URL("https://elsewhere.example/x")) is mounted
        assert internals.transport_for_url(client, httpx.URL("https://api.example/x")) is own


def test_every_httpcore_pool_of_a_client_gets_the_wrapped_backend() -> None:
    own, proxied, mock = httpx.HTTPTransport(), httpx.HTTPTransport(proxy=PROXY), httpx.MockTransport(httpx.Response)
    mounts = {"https://": proxied, "https://mock.example": mock, "http://none.example": None}
    with httpx.Client(transport=own, mounts=mounts) as client:
        before = [own._pool._network_backend, proxied._pool._network_backend]

        def wrap(backend: object) -> tuple[str, object]:
            return ("wrapped", backend)

        internals.wrap_network_backends(client, wrap)
        assert [own._pool._network_backend, proxied._pool._network_backend] == [wrap(backend) for backend in before]


def test_stored_content_is_the_responses_content() -> None:
    response = httpx.Response(200, stream=httpx.ByteStream(b"raw"))
    internals.store_content(response, b"decoded")
    assert response.content == b"decoded"
