"""What only the file store does: its file (permissions, corrupt or foreign files, a file moved away, a
read-only or full disk), its schema's versions, `":memory:"`, and the cost of a claim in SQLite's steps."""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cms_python import CMSClient, Outbox
from cms_python._outbox import sqlite
from cms_python._outbox.sqlite import SCHEMA_VERSION, SQLiteStore
from cms_python.testing import Sandbox

from ..conftest import LEAD, SALE, TOKEN
from ..support.processes import fork, started
from .conftest import lead, new_event


@pytest.fixture(params=["file"])
def new_target(request: pytest.FixtureRequest, tmp_path: Path):
    """The file store only, here."""
    numbers = iter(range(1_000_000))
    return lambda: str(tmp_path / f"outbox{next(numbers)}.sqlite3")


def test_a_storage_failure_is_a_storage_error(make, caplog: pytest.LogCaptureFixture) -> None:
    outbox, _ = make()
    outbox.track_lead(**lead(customer_external_id="first"))
    assert outbox.flush(timeout=10)
    connection = outbox._store.connection
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
    with caplog.at_level(logging.WARNING, logger="cms_python"):
        # Events as large as the field limits allow (4 bytes a character beyond the BMP): each needs a new page.
        large = {"event_name": "\U0001f600" * 255, "customer_name": "\U0001f600" * 255}
        results = [
            outbox.track_lead(**lead(customer_external_id=f"c{i}" + "\U0001f600" * 250, **large)) for i in range(3)
        ]
    assert [(result["success"], result["type"], result["status_code"]) for result in results] == [
        (False, "storage_error", None)
    ] * 3
    assert "full" in results[0]["error"]
    assert "could not be stored" in caplog.text
    connection.execute("PRAGMA max_page_count = 1000000")
    assert outbox.track_lead(**lead(customer_external_id="later"))["success"]


def test_a_file_made_read_only_is_a_storage_error(make, tmp_path: Path) -> None:
    outbox, _ = make(tmp_path / "o.sqlite3")
    assert outbox.track_lead(**lead(customer_external_id="before"))["success"]
    # The database and its WAL (not the shared-memory index: SQLite maps it, and a mapping that cannot grow is a
    # SIGBUS, a case of its own).
    files = [tmp_path / "o.sqlite3", tmp_path / "o.sqlite3-wal"]
    # root writes files whatever their mode: the immutable attribute stops it too (ext4 and most Linux file systems)
    read_only = ["chattr", "+i"] if os.geteuid() == 0 else ["chmod", "a-w"]
    writable = ["chattr", "-i"] if os.geteuid() == 0 else ["chmod", "u+w"]
    if subprocess.run([*read_only, *map(str, files)], check=False, capture_output=True).returncode:
        pytest.skip("this file system has no immutable attribute")
    try:
        result = outbox.track_lead(**lead(customer_external_id="during"))
    finally:
        subprocess.run([*writable, *map(str, files)], check=True)
    assert (result["success"], result["type"], result["status_code"]) == (False, "storage_error", None)
    assert str(tmp_path / "o.sqlite3") in result["error"]
    assert outbox.track_lead(**lead(customer_external_id="after"))["success"]


def test_a_new_file_is_readable_by_its_owner_only(make, tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "o.sqlite3"
    outbox, _ = make(path)
    outbox.track_lead(**LEAD)
    assert path.stat().st_mode & 0o777 == 0o600
    existing = tmp_path / "existing.sqlite3"
    existing.touch(mode=0o640)
    existing.chmod(0o640)
    make(existing)
    assert existing.stat().st_mode & 0o777 == 0o640


def test_a_new_file_behind_a_dangling_symlink_is_readable_by_its_owner_only(make, tmp_path: Path) -> None:
    target = tmp_path / "target.sqlite3"
    link = tmp_path / "link.sqlite3"
    link.symlink_to(target)
    outbox, _ = make(link)
    outbox.track_lead(**LEAD)
    assert target.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a database at all, but someone's notes\n" * 100, "not a readable CutMeShort outbox"),
        (b"SQLite format 3\x00" + b"\xff" * 200, "not a readable CutMeShort outbox"),
    ],
)
def test_a_corrupt_file_is_refused_and_left_alone(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "o.sqlite3"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as raised:
        Outbox(path, TOKEN)
    assert str(path) in str(raised.value)
    assert path.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["o.sqlite3"]


def test_another_sqlite_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="not a CutMeShort outbox") as raised:
        Outbox(path, TOKEN)
    assert str(path) in str(raised.value)
    assert path.read_bytes() == before


def test_a_new_file_another_process_is_setting_up_is_waited_for(tmp_path: Path) -> None:
    """Two processes opening a new outbox at once: the second's switch to WAL meets the first's write lock, which
    SQLite refuses at once rather than within its busy timeout (seen as a flaky "database is locked" in CI)."""
    path = tmp_path / "o.sqlite3"
    path.touch()
    hold = (
        "import sqlite3, sys, time\n"
        "connection = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "connection.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(0.5)\n"
        "connection.execute('COMMIT')\n"
    )
    with started([sys.executable, "-c", hold, str(path)], stdout=subprocess.PIPE) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        SQLiteStore(str(path), "process", lease=300.0).close()
        assert holder.wait(timeout=30) == 0


def test_an_outbox_set_up_by_another_process_while_this_one_looks_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first look at the file is one snapshot: read in three, another process could set the file up between
    them, and a new outbox looked like another application's database."""
    path = tmp_path / "o.sqlite3"
    connect = sqlite3.connect
    looked: list[str] = []

    def traced(*args: object, **kwargs: object) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)  # type: ignore[arg-type]

        def trace(statement: str) -> None:
            if "user_version" in statement and not looked:  # the first look has begun
                looked.append(statement)
                code = "import sys; from cms_python._outbox.sqlite import SQLiteStore; SQLiteStore(sys.argv[1]).close()"
                subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)

        connection.set_trace_callback(trace)
        return connection

    monkeypatch.setattr(sqlite3, "connect", traced)
    SQLiteStore(str(path), "process", lease=300.0).close()
    assert looked


def test_a_forked_child_keeps_its_files_when_the_parent_closes(tmp_path: Path, closed_port: int) -> None:
    """The child's connection takes locks of its own: else the parent, closing as the file's last user, deletes
    the -wal and -shm under the child, and what the child writes next goes nowhere. Two outboxes on the file in
    the parent (an app factory called twice): the child uses one; the parent closes both."""
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path, TOKEN, f"http://127.0.0.1:{closed_port}", flush_on_exit=0)
    other = Outbox(path, TOKEN, f"http://127.0.0.1:{closed_port}", flush_on_exit=0)
    assert outbox.track_lead(**lead(idempotency_key="k0"))["success"]
    results, results_in = os.pipe()
    go_on, go_on_in = os.pipe()
    pid = fork()
    if pid == 0:
        status = 1
        try:
            first = outbox.track_lead(**lead(idempotency_key="k1"))
            os.write(results_in, (json.dumps(first) + "\n").encode())
            os.read(go_on, 1)
            second = outbox.track_lead(**lead(idempotency_key="k2"))
            os.write(results_in, (json.dumps(second) + "\n").encode())
            status = 0
        finally:
            os._exit(status)
    os.close(results_in)
    os.close(go_on)
    with os.fdopen(results) as lines:
        assert json.loads(lines.readline())["success"] is True
        outbox.close(timeout=0)
        other.close(timeout=0)
        os.write(go_on_in, b"x")
        os.close(go_on_in)
        second = json.loads(lines.readline())
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert second["success"] is True, second
    with sqlite3.connect(path) as connection:
        keys = [key for (key,) in connection.execute("SELECT idempotency_key FROM events ORDER BY seq")]
    assert keys == ["k0", "k1", "k2"]


def test_a_forked_child_whose_outbox_cannot_be_opened_again_gets_a_storage_error(
    tmp_path: Path, closed_port: int
) -> None:
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path, TOKEN, f"http://127.0.0.1:{closed_port}", flush_on_exit=0)
    assert outbox.track_lead(**lead(idempotency_key="k0"))["success"]
    results, results_in = os.pipe()
    pid = fork()
    if pid == 0:
        status = 1
        try:
            for suffix in ("", "-wal", "-shm"):  # the outbox moved away whole, and another file in its place
                (tmp_path / f"o.sqlite3{suffix}").rename(tmp_path / f"moved.sqlite3{suffix}")
            path.write_text("someone's notes\n")
            tries = [outbox.track_lead(**lead(idempotency_key=f"k{number}")) for number in (1, 2)]
            os.write(results_in, (json.dumps(tries) + "\n").encode())
            status = 0
        finally:
            os._exit(status)
    os.close(results_in)
    with os.fdopen(results) as lines:
        tries = json.loads(lines.readline() or "null")
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    outbox.close(timeout=0)
    assert [(result["success"], result.get("type")) for result in tries] == [(False, "storage_error")] * 2, tries
    assert "not a readable CutMeShort outbox" in tries[0]["error"]


def test_an_sqlite_too_old_for_the_schema_is_refused_before_the_file_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(OSError, match=r"needs SQLite 3\.32\.0 or newer; this Python has 3\.31\.1"):
        Outbox(tmp_path / "o.sqlite3", TOKEN)
    assert list(tmp_path.iterdir()) == []


def test_a_file_from_a_newer_version_is_refused(make, tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    outbox, _ = make(path)
    outbox.close()
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ValueError, match="newer cms-python-client") as raised:
        Outbox(path, TOKEN)
    assert str(path) in str(raised.value)


def test_memory_outbox_delivers(make, cms_sandbox: Sandbox) -> None:
    outbox, _ = make(":memory:")
    outbox.track_sale(**SALE)
    assert outbox.flush(timeout=10)
    assert len(cms_sandbox.sales) == 1


def test_arguments_are_checked_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    with pytest.raises(ValueError, match="No API token"):
        Outbox(path)
    for name, bad in (
        ("rate_limit", 0),
        ("rate_limit", True),
        ("max_pending", 0),
        ("max_age", -1),
        ("flush_on_exit", -1),
        ("durability", "disk"),
    ):
        with pytest.raises(ValueError, match=name):
            Outbox(path, TOKEN, **{name: bad})
    with pytest.raises(ValueError, match="either client or token"):
        Outbox(path, TOKEN, client=CMSClient(TOKEN))
    with pytest.raises(TypeError, match="CMSClient"):
        Outbox(path, client=object())  # type: ignore[arg-type]
    assert not path.exists()


def test_importing_cms_python_does_not_load_the_outbox() -> None:
    code = "import sys, cms_python; print('sqlite3' in sys.modules, 'cms_python._outbox' in sys.modules)"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).split() == ["False", "False"]


def test_the_stored_body_is_what_is_sent(make, cms_sandbox: Sandbox) -> None:
    outbox, _ = make()
    cms_sandbox.fail_next(422)  # a failed event keeps its body
    outbox.track_lead(**lead(customer_name="Zoë", customer_email="zoe@example.com"))
    assert outbox.flush(timeout=10)
    body, stamped_at = outbox._store.connection.execute("SELECT body, stamped_at FROM events").fetchone()
    sent = cms_sandbox.requests[0].json
    assert datetime.fromisoformat(sent.pop("timestamp")) == datetime.fromtimestamp(stamped_at, timezone.utc)
    assert json.loads(body) == sent


def test_a_file_moved_or_deleted_under_the_outbox_refuses_to_acknowledge(tmp_path: Path) -> None:
    for how in ("moved", "deleted"):
        path = tmp_path / f"{how}.sqlite3"
        with Outbox(path, TOKEN, "http://127.0.0.1:9", rate_limit=None) as outbox:
            assert outbox.track_lead(**lead(customer_external_id="before"))["success"]
            for suffix in ("", "-wal", "-shm"):
                source = tmp_path / f"{how}.sqlite3{suffix}"
                if how == "moved":
                    source.rename(tmp_path / f"elsewhere-{how}.sqlite3{suffix}")
                else:
                    source.unlink()
            result = outbox.track_lead(**lead(customer_external_id="after"))
            assert (result["success"], result["type"]) == (False, "storage_error"), how
            assert str(path) in result["error"]
            assert f"was {how}" in result["error"] or "no longer" in result["error"]
            outbox.close(timeout=0)
        # What the next process on the path finds: not the refused event.
        with Outbox(path, TOKEN, "http://127.0.0.1:9") as later:
            assert later.stats()["pending"] == 0
            later.close(timeout=0)


@pytest.mark.parametrize(
    "how",
    ["moved", "deleted", "-wal deleted", "-wal deleted, times set back", "folder renamed", "folder replaced by a link"],
)
def test_a_file_moved_once_its_folder_settled_is_noticed_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # Once checks SETTLED apart have seen its folder unchanged, a check looks at the folder only: what moves a file
    # changes its folder, and what replaces the folder changes what its path names.
    monkeypatch.setattr(sqlite, "SETTLED", 0.05)
    folder = tmp_path / "outbox"
    folder.mkdir()
    path = folder / "o.sqlite3"
    with Outbox(path, TOKEN, "http://127.0.0.1:9", flush_on_exit=0) as outbox:
        _used_past_settling(outbox)
        with monkeypatch.context() as files_unseen:  # the folder only, from now on
            files_unseen.setattr(sqlite, "_file_identity", None)
            assert outbox.track_lead(**lead(customer_external_id="settled"))["success"]
        if how.startswith("folder"):
            folder.rename(tmp_path / "elsewhere")
            if how == "folder replaced by a link":
                (tmp_path / "copy").mkdir()
                for suffix in ("", "-wal", "-shm"):
                    (tmp_path / "copy" / f"o.sqlite3{suffix}").write_bytes(
                        (tmp_path / f"elsewhere/o.sqlite3{suffix}").read_bytes()
                    )
                folder.symlink_to(tmp_path / "copy")
        else:
            before = folder.stat()
            for suffix in ("-wal",) if how.startswith("-wal deleted") else ("", "-wal", "-shm"):
                source = folder / f"o.sqlite3{suffix}"
                if how == "moved":
                    source.rename(tmp_path / f"elsewhere{suffix}")
                else:
                    source.unlink()
            if how.endswith("times set back"):  # its change time moves all the same
                os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))
        result = outbox.track_lead(**lead(customer_external_id="after"))
        assert (result["success"], result["type"]) == (False, "storage_error"), how
        assert "no longer names the outbox's file" in result["error"]
        outbox.close(timeout=0)


@pytest.mark.parametrize("how", ["its link pointed elsewhere", "a link on the way pointed elsewhere"])
def test_a_path_through_a_symbolic_link_is_checked_file_by_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # A link can point elsewhere without any change to the folders the file, or the link, are in.
    monkeypatch.setattr(sqlite, "SETTLED", 0.05)
    for name in ("links", "other", "releases/1", "releases/2"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "releases" / "current").symlink_to(tmp_path / "releases" / "1")
    path = tmp_path / "links" / "o.sqlite3"
    path.symlink_to(tmp_path / "releases" / "current" / "o.sqlite3")
    with Outbox(path, TOKEN, "http://127.0.0.1:9", flush_on_exit=0) as outbox:
        _used_past_settling(outbox)
        assert outbox._store._folder is None
        link, target = (
            (path, tmp_path / "other" / "o.sqlite3")
            if how == "its link pointed elsewhere"
            else (tmp_path / "releases" / "current", tmp_path / "releases" / "2")
        )
        (link.parent / "new").symlink_to(target)
        (link.parent / "new").replace(link)
        result = outbox.track_lead(**lead(customer_external_id="after"))
        assert (result["success"], result["type"]) == (False, "storage_error"), how
        outbox.close(timeout=0)


def _used_past_settling(outbox: Outbox) -> None:
    """Two enqueues more than SETTLED (patched to 0.05 s) apart: the first check sees the folder, the second finds
    it settled."""
    for number in range(2):
        assert outbox.track_lead(**lead(customer_external_id=f"before{number}"))["success"]
        time.sleep(0.1)


@pytest.mark.parametrize("shape", ["one customer", "many customers"])
def test_a_claim_costs_the_same_whatever_the_backlog(tmp_path: Path, shape: str) -> None:
    # SQLite virtual-machine steps of one claim (counted, not timed): with 20,000 events pending, about what it
    # takes with 20. A claim that scanned the pending events made unpaced delivery quadratic in a backlog.
    def steps_of_a_claim(pending: int) -> int:
        store = SQLiteStore(str(tmp_path / f"{shape}-{pending}.sqlite3"))
        try:
            with store.lock, store.transaction():
                for number in range(pending):
                    customer = "one" if shape == "one customer" else f"c{number}"
                    store.enqueue(new_event(f"k{number}", customer, {}), now=0, max_pending=10**9)
            steps = [0]

            def count() -> int:
                steps[0] += 1
                return 0

            for _ in range(pending // sqlite.CHAIN_BATCH + 1):  # chains the events (a batch each), opens the reader
                store.claim("warm-up", 1.0, 32, None)
                store.release_owner("warm-up")
            for connection in (store.connection, store._reading()):
                connection.set_progress_handler(count, 10)
            claim = store.claim("owner", 2.0, 32, None)
            assert len(claim.events) == (1 if shape == "one customer" else 32)
            return steps[0]
        finally:
            store.close()

    small, large = steps_of_a_claim(40), steps_of_a_claim(20_000)
    assert large <= 2 * small + 50, (small, large)


def test_a_file_of_the_first_schema_is_brought_up_to_date_and_delivered_in_order(
    make, cms_sandbox: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "v1.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.executescript(sqlite._EVENTS)
        connection.execute(f"PRAGMA application_id = {sqlite.APPLICATION_ID}")
        connection.execute("PRAGMA user_version = 1")
        for seq, customer in enumerate(["a", "b", "a", "b", "a"], 1):
            body = json.dumps({"eventName": f"e{seq}", "customerExternalId": customer, "clickId": "c"})
            connection.execute(
                "INSERT INTO events (seq, kind, idempotency_key, customer, body, queued_at) VALUES (?, ?, ?, ?, ?, 0)",
                (seq, "lead", f"k{seq}", customer, body),
            )
    outbox, _ = make(path)
    assert outbox.flush(timeout=10)
    delivered = [request.idempotency_key for request in cms_sandbox.requests]
    assert sorted(delivered) == ["k1", "k2", "k3", "k4", "k5"]
    assert [key for key in delivered if key in ("k1", "k3", "k5")] == ["k1", "k3", "k5"]
    assert outbox._store.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_retried_event_goes_after_its_customer_s_events_queued_since_the_last_claim(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "o.sqlite3"))
    try:
        store.enqueue(new_event("failing", "c"), now=1.0, max_pending=100)
        (event,) = store.claim("me", 2.0, 10, None).events
        store.failed(event, {"type": "x"}, attempted=True, now=3.0)
        store.enqueue(new_event("queued-meanwhile", "c"), now=4.0, max_pending=100)  # not chained: no claim since
        assert store.retry_failed() == 1
        sent = []
        while claimed := store.claim("me", 5.0, 10, None).events:
            sent += [claimed_event.idempotency_key for claimed_event in claimed]
            store.delivered(claimed, 5.0)
        assert sent == ["queued-meanwhile", "failing"]
    finally:
        store.close()


@pytest.mark.parametrize("batch", [2, sqlite.CHAIN_BATCH])
@pytest.mark.parametrize("seed", range(6))
def test_each_customer_s_chain_follows_every_change_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, batch: int
) -> None:
    # Random enqueues, deliveries, failures, retries (in batches of `batch`) and purges: each customer's chain (its
    # head, then next_seq) is always its pending events in the order they are to be sent, and only its head can be
    # claimed.
    monkeypatch.setattr(sqlite, "CHAIN_BATCH", batch)
    chance = random.Random(seed)
    store = SQLiteStore(str(tmp_path / "o.sqlite3"))
    expected: dict[str, list[int]] = {}  # customer -> pending seqs, in order
    failed: dict[int, str] = {}
    try:
        for number in range(300):
            action = chance.choice(["enqueue"] * 4 + ["deliver", "fail", "retry", "purge"])
            if action == "enqueue":
                customer = f"c{chance.randrange(6)}"
                event_id, _ = store.enqueue(new_event(f"k{number}", customer), now=1.0, max_pending=10**6)
                expected.setdefault(customer, []).append(int(event_id))
            elif action in ("deliver", "fail"):
                claim = store.claim("me", 2.0, 1, None)
                if claim.events:
                    (event,) = claim.events
                    customer = next(name for name, seqs in expected.items() if seqs and seqs[0] == event.seq)
                    expected[customer].pop(0)
                    if action == "deliver":
                        store.delivered([event], 3.0)
                    else:
                        store.failed(event, {"type": "x"}, attempted=True, now=3.0)
                        failed[event.seq] = customer
            elif action == "retry":
                assert store.retry_failed() == len(failed)
                for seq in sorted(failed):
                    expected[failed[seq]].append(seq)
                failed.clear()
            else:
                assert store.purge_failed() == len(failed)
                failed.clear()
            store.claim("warm-up", 2.0, 10_000, None)  # chains what was just queued
            store.release_owner("warm-up")
            chains = {}
            for customer, head in store.connection.execute("SELECT customer, seq FROM heads").fetchall():
                chain, seq = [], head
                while seq is not None:
                    chain.append(seq)
                    (seq,) = store.connection.execute("SELECT next_seq FROM events WHERE seq = ?", (seq,)).fetchone()
                chains[customer] = chain
            assert chains == {customer: seqs for customer, seqs in expected.items() if seqs}, (seed, number, action)
    finally:
        store.close()
