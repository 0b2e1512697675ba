"""`import cms_python` loads the sync path only; the rest arrives on first use, under the same names."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import cms_python

#: Modules that only the async face, the sandbox, the CLI, the outbox or the web integrations need.
NOT_FOR_THE_SYNC_PATH = {
    "asyncio",
    "sqlite3",
    "psycopg",
    "cms_python._async_client",
    "cms_python._outbox",
    "cms_python._cli",
    "cms_python._sandbox",
    "cms_python.testing",
    "cms_python.pytest_plugin",
    "cms_python.integrations",
}


def modules_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running `statement`."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(json.loads(run.stdout))


@pytest.mark.parametrize("statement", ["import cms_python", "from cms_python import CMSClient"])
def test_the_sync_path_imports_nothing_only_other_modes_need(statement):
    loaded = modules_after(statement)
    assert "cms_python._client" in loaded
    assert loaded & NOT_FOR_THE_SYNC_PATH == set()


def test_httpcore_waits_for_the_first_client():
    # httpx imports httpcore when a client makes its transport: imported by cms_python, it cost ~35 ms more.
    assert "httpcore" not in modules_after("import cms_python")
    assert "httpcore" in modules_after("import cms_python; cms_python.CMSClient(token='t' * 8)")


#: A client, and a lead with a timestamp sent through it and answered, all in-process.
ONE_CALL = """
import datetime, httpx, cms_python
answer = httpx.MockTransport(lambda request: httpx.Response(200, json={"success": True, "timestamp": "T"}))
with cms_python.CMSClient(token="t" * 8, http_client=httpx.Client(transport=answer)) as client:
    result = client.track_lead(
        event_name="e", customer_external_id="c", click_id="k", timestamp=datetime.datetime.now(datetime.timezone.utc)
    )
assert result["success"], result
"""


@pytest.mark.parametrize("statement", ["import cms_python", "from cms_python import CMSClient", ONE_CALL])
def test_dateutil_waits_for_a_date_time_to_parse(statement):
    # dateutil brings zoneinfo, decimal, ctypes, sysconfig, ... (15-25 ms of import), and the SDK parses no
    # date-time on its path: the generated models import it where they parse one (openapi/templates/).
    loaded = modules_after(statement)
    assert {name for name in loaded if name.partition(".")[0] == "dateutil"} == set()


def test_the_async_client_is_imported_on_first_use():
    loaded = modules_after("from cms_python import AsyncCMSClient")
    assert "cms_python._async_client" in loaded
    assert "asyncio" in loaded
    assert "sqlite3" not in loaded


def test_the_outbox_is_imported_on_first_use_and_each_store_with_its_first_outbox():
    loaded = modules_after("from cms_python import Outbox")
    assert "cms_python._outbox" in loaded
    assert loaded & {"sqlite3", "psycopg", "cms_python._async_client"} == set()
    loaded = modules_after("from cms_python import Outbox; Outbox(':memory:', 't' * 8)")
    assert "sqlite3" in loaded
    assert "psycopg" not in loaded


def test_every_public_name_is_there_and_listed():
    from cms_python._async_client import AsyncCMSClient  # noqa: PLC0415

    assert cms_python.AsyncCMSClient is AsyncCMSClient
    for name in cms_python.__all__:
        assert getattr(cms_python, name) is not None
    assert set(cms_python.__all__) <= set(dir(cms_python))
    namespace: dict[str, object] = {}
    exec("from cms_python import *", namespace)
    assert namespace["AsyncCMSClient"] is AsyncCMSClient
    assert set(cms_python.__all__) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        cms_python.Nope  # noqa: B018
    with pytest.raises(ImportError):
        from cms_python import Nope  # noqa: F401, PLC0415
