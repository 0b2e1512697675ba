"""What a hostile test of the outbox's hardening broke (issue 17): a relative path after a chdir, its -wal or -shm
deleted, a traceback that carried server text, a delivery the file failed to record."""

from __future__ import annotations

import io
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cms_python import CMSClient, Outbox
from cms_python._outbox import sqlite as sqlite_store
from cms_python.testing import Sandbox

from ..conftest import LEAD, TOKEN, key_of
from ..support import ROOT
from ..support.servers import LoopbackServer, Reply
from ..support.waits import wait_until

posix_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX processes and signals")


def test_a_relative_outbox_path_names_the_same_file_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cms_sandbox: Sandbox, cms_client: CMSClient
) -> None:
    # An app that opens Outbox("outbox.sqlite3") and then changes directory (a daemon's chdir("/")): SQLite keeps
    # the file it opened, but the moved-file check looked at the path in the new directory (storage_error for an
    # event that was stored), and the delivery thread opened its connection there (a new, empty file: "no such
    # table", nothing ever delivered).
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    outbox = Outbox("outbox.sqlite3", client=cms_client, rate_limit=None)
    try:
        monkeypatch.chdir(second)
        result = outbox.track_lead(**LEAD)
        assert result["success"], result
        assert outbox.flush(timeout=10)
        assert [key_of(request) for request in cms_sandbox.requests] == [result["data"]["idempotency_key"]]
        assert not list(second.iterdir())
    finally:
        outbox.close(timeout=0)


_DELETE_AND_KILL = """
import json, os, signal, sys
from cms_python import Outbox
path, suffix = sys.argv[1:]
outbox = Outbox(path, "hostile-token-1234", "http://127.0.0.1:9", rate_limit=None)
assert outbox.track_lead(click_id="c", event_name="e", customer_external_id="before")["success"]
os.unlink(path + suffix)
result = outbox.track_lead(click_id="c", event_name="e", customer_external_id="after", idempotency_key="after")
print(json.dumps(result["success"]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@posix_only
@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_an_outbox_whose_wal_or_shm_file_was_deleted_acknowledges_nothing(tmp_path: Path, suffix: str) -> None:
    # SQLite keeps writing to a -wal it has open after it was deleted: what it acknowledges then is gone with the
    # process (kill -9, a crash; a checkpoint may not come first). Without its -shm, the next process on the file
    # builds another index of the same log (SQLite then loses commits whatever this process does).
    path = tmp_path / "outbox.sqlite3"
    process = subprocess.run(
        [sys.executable, "-c", _DELETE_AND_KILL, str(path), suffix],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    acknowledged = process.stdout.split() == ["true"]
    with Outbox(path, TOKEN, "http://127.0.0.1:9", flush_on_exit=0) as later:
        found = later._store.connection.execute("SELECT count(*) FROM events WHERE idempotency_key = 'after'")
        stored = found.fetchone()[0] == 1
        later.close(timeout=0)
    assert not acknowledged or stored, "acknowledged after its -wal/-shm was deleted, and lost with the process"
    assert not acknowledged, f"acknowledged after its {suffix} file was deleted"


FORGED = "bad\nCRITICAL cms_python: FORGED \x1b[31m\u202e"


def test_an_exception_from_on_failure_does_not_forge_log_lines(tmp_path: Path, server: LoopbackServer) -> None:
    # The escaping filter escaped the message, but the traceback that logging writes after it carries the
    # exception's text raw: an on_failure that raises with the server's words (here its error type) forged lines.
    server.default = Reply(422, {"success": False, "error": FORGED, "type": FORGED})
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("cms_python")
    logger.addHandler(handler)

    def on_failure(event: object, result: dict[str, object]) -> None:
        raise RuntimeError(f"could not report {result['type']}")

    try:
        with Outbox(tmp_path / "outbox.sqlite3", TOKEN, server.url, rate_limit=None, on_failure=on_failure) as outbox:
            outbox.track_lead(**LEAD)
            assert outbox.flush(timeout=10)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "on_failure raised" in text
    assert "could not report bad" in text  # the traceback is still there
    forged = [line for line in text.splitlines() if line.startswith("CRITICAL") or not line.isprintable()]
    assert not forged, forged


class _WaitsToBeWoken:
    """The wall clock, but a wait (the backoff after a storage failure) lasts until the thread is woken."""

    def now(self) -> float:
        return time.time()

    def wait(self, wake: threading.Event, seconds: float) -> None:
        wake.wait()
        wake.clear()


def test_a_delivery_the_store_failed_to_record_is_not_released_to_another_process(
    tmp_path: Path, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The API accepted the event, but recording it failed (another connection held the file's write lock longer
    # than the busy timeout): its claim stays this process's until it is recorded. close(timeout=0) then ended
    # the thread, which released every claim of the process, that one too: the next process sent it again.
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT", 0.2)
    path = tmp_path / "outbox.sqlite3"
    server.default = Reply(delay=0.5)
    outbox = Outbox(path, TOKEN, server.url, rate_limit=None)
    outbox._settings.clock = _WaitsToBeWoken()
    try:
        assert outbox.track_lead(**LEAD, idempotency_key="once")["success"]
        wait_until(lambda: len(server.requests) == 1)  # on the wire: the answer takes 0.5 s
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            wait_until(lambda: outbox._delivery is not None and bool(outbox._delivery._unrecorded))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
    finally:
        outbox.close(timeout=0)
    server.default = Reply()
    with Outbox(path, TOKEN, server.url, rate_limit=None) as later:
        assert later.flush(timeout=10)
        later.close(timeout=0)
    assert [key_of(request) for request in server.requests] == ["once"]
