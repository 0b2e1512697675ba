"""What only the PostgreSQL store does, against a real server: the app's transaction decides (psycopg, psycopg2,
SQLAlchemy, Django), a fleet of processes is one queue (one pace, one order per customer, claims taken over from a
killed or hung process), its schema, secrets, and bad days (the database unreachable, restarted)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg2
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from cms_python import Outbox
from cms_python._outbox.postgres import PostgresStore
from cms_python._outbox.store import token_scope
from cms_python.testing import SANDBOX_TOKEN, Sandbox

from ..conftest import TOKEN
from ..support import ROOT
from ..support.postgres import REQUIRED, PostgresServer
from ..support.servers import LoopbackServer, Reply
from ..support.waits import wait_until
from .child import TOKEN as CHILD_TOKEN
from .conftest import Child, lead, new_event, sale, summary

PASSWORD = "s3cret-pw-Zq9"


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    """A database of the test's own (a schema), reached with a password in the URL (the test server trusts
    every connection, so any password works: where it shows, it leaked)."""
    return postgres.new_url(password=PASSWORD)


@pytest.fixture
def outbox(url: str, cms_sandbox: Sandbox) -> Iterator[Outbox]:
    """An outbox in the test's database, delivering to the sandbox, unpaced."""
    with cms_sandbox.client() as client, Outbox(url, client=client, rate_limit=None) as made:
        yield made
        made.close(timeout=0)


def sent_names(sandbox: Sandbox) -> list[str]:
    return [request.json["eventName"] for request in sandbox.requests]


# -- the target ---------------------------------------------------------------------------------------------------


def test_a_postgres_url_keeps_the_events_in_the_database(url: str, cms_sandbox: Sandbox) -> None:
    with Outbox(url, SANDBOX_TOKEN, "http://127.0.0.1:9") as down:  # the API unreachable: the event stays
        assert down.track_sale(**sale())["success"]
        with psycopg.connect(url) as connection:
            assert connection.execute("SELECT kind, state FROM cms_outbox_events").fetchall() == [("sale", "pending")]
        down.close(timeout=0)
    with cms_sandbox.client() as client, Outbox(url, client=client, rate_limit=None) as outbox:
        assert outbox.flush(timeout=10)
    assert len(cms_sandbox.sales) == 1


def test_the_postgres_scheme_is_the_same(postgres: PostgresServer, cms_sandbox: Sandbox) -> None:
    target = postgres.new_url().replace("postgresql://", "postgres://", 1)
    with cms_sandbox.client() as client, Outbox(target, client=client, rate_limit=None) as made:
        assert made.track_lead(**lead())["success"]
        assert made.flush(timeout=10)


def test_another_scheme_is_refused_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for target in ("mysql://app:secret@db/app", "sqlite:///events.db", "redis://localhost"):
        with pytest.raises(ValueError, match=r"postgresql:// or postgres://") as raised:
            Outbox(target, TOKEN)
        assert "secret" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_durability_belongs_to_the_file_store(url: str) -> None:
    with pytest.raises(ValueError, match="durability is for a file outbox"):
        Outbox(url, TOKEN, durability="power")


def test_without_the_postgres_extra_the_error_says_what_to_install(url: str) -> None:
    code = f"import sys; sys.modules['psycopg'] = None\nfrom cms_python import Outbox\nOutbox({url!r}, 'token-1234567')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert run.returncode == 1
    assert "cms-python-client[postgres]" in run.stderr
    assert PASSWORD not in run.stderr


def test_a_database_written_by_a_newer_version_is_refused(url: str) -> None:
    Outbox(url, TOKEN).close()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("UPDATE cms_outbox_schema SET version = 99")
    with pytest.raises(ValueError, match="newer cms-python-client") as raised:
        Outbox(url, TOKEN)
    assert PASSWORD not in str(raised.value)


def test_another_token_neither_sees_nor_sends_these_events(url: str, cms_sandbox: Sandbox) -> None:
    with (
        cms_sandbox.client() as client,
        Outbox(url, client=client, rate_limit=None) as mine,
        Outbox(url, "another-token-3f9a", "http://127.0.0.1:9", rate_limit=None) as theirs,
    ):
        assert mine.track_lead(**lead(idempotency_key="shared-key"))["success"]
        other = theirs.track_lead(**lead(idempotency_key="shared-key", event_name="theirs"))
        assert other["data"]["duplicate"] is False  # keys are each token's own
        assert theirs.stats()["pending"] == 1
        assert mine.flush(timeout=10)
        assert sent_names(cms_sandbox) == ["signup_started"]
        assert theirs.stats() == {"pending": 1, "failed": 0, "delivered": 0, "paused": False}
        theirs.close(timeout=0)


# -- the app's transaction decides --------------------------------------------------------------------------------


def test_psycopg_commit_delivers_and_rollback_leaves_nothing(url: str, outbox: Outbox, cms_sandbox: Sandbox) -> None:
    with psycopg.connect(url) as connection:
        result = outbox.within(connection).track_sale(**sale(invoice_id="rolled-back"))
        assert result["success"]
        connection.rollback()
        outbox.within(connection).track_sale(**sale(invoice_id="committed"))
        connection.commit()
    assert outbox.flush(timeout=10)
    assert [sale.invoice_id for sale in cms_sandbox.sales] == ["committed"]
    assert outbox.stats()["pending"] == 0


def test_an_event_is_not_sent_before_its_transaction_commits(url: str, outbox: Outbox, cms_sandbox: Sandbox) -> None:
    with psycopg.connect(url) as connection:
        assert outbox.within(connection).track_lead(**lead())["success"]
        time.sleep(1.5)  # the delivery thread looks meanwhile (it was woken by the enqueue)
        assert cms_sandbox.requests == []
        connection.commit()
        wait_until(lambda: len(cms_sandbox.requests) == 1)


def test_psycopg2_commit_and_rollback(url: str, outbox: Outbox, cms_sandbox: Sandbox) -> None:
    connection = psycopg2.connect(url)
    try:
        outbox.within(connection).track_lead(**lead(event_name="rolled_back"))
        connection.rollback()
        outbox.within(connection).track_lead(**lead(event_name="committed"))
        connection.commit()
    finally:
        connection.close()
    assert outbox.flush(timeout=10)
    assert sent_names(cms_sandbox) == ["committed"]


def sqlalchemy_url(url: str, driver: str = "psycopg") -> str:
    return url.replace("postgresql://", f"postgresql+{driver}://", 1)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sqlalchemy_connection_and_session(url: str, outbox: Outbox, cms_sandbox: Sandbox, driver: str) -> None:
    engine = sqlalchemy.create_engine(sqlalchemy_url(url, driver))
    try:
        with engine.connect() as connection:
            outbox.within(connection).track_lead(**lead(event_name="connection_rolled_back"))
            connection.rollback()
            outbox.within(connection).track_lead(**lead(event_name="connection_committed"))
            connection.commit()
        with Session(engine) as session:
            outbox.within(session).track_lead(**lead(event_name="session_rolled_back"))
            session.rollback()
            outbox.within(session).track_lead(**lead(event_name="session_committed"))
            session.commit()
    finally:
        engine.dispose()
    assert outbox.flush(timeout=10)
    assert sent_names(cms_sandbox) == ["connection_committed", "session_committed"]


def test_an_async_session_goes_through_run_sync(url: str, outbox: Outbox, cms_sandbox: Sandbox) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession  # noqa: PLC0415

    async def signup() -> None:
        engine = create_async_engine(sqlalchemy_url(url))
        try:
            async with AsyncSession(engine) as session:
                with pytest.raises(TypeError, match="run_sync"):
                    outbox.within(session)
                await session.run_sync(lambda sync: outbox.within(sync).track_lead(**lead(event_name="rolled_back")))
                await session.rollback()
                await session.run_sync(lambda sync: outbox.within(sync).track_lead(**lead(event_name="committed")))
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(signup())
    assert outbox.flush(timeout=10)
    assert sent_names(cms_sandbox) == ["committed"]


def test_what_within_refuses(tmp_path: Path, outbox: Outbox) -> None:
    with pytest.raises(TypeError, match="psycopg 3 or psycopg2 connection, a SQLAlchemy"):
        outbox.within(object())
    with pytest.raises(TypeError, match="within\\(\\) takes"):
        outbox.within(sqlite3.connect(":memory:"))
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.connect() as connection, pytest.raises(TypeError, match="sqlite"):
        outbox.within(connection)
    with Outbox(tmp_path / "o.sqlite3", TOKEN) as in_a_file, pytest.raises(ValueError, match="postgresql://"):
        in_a_file.within(object())


def test_a_failed_statement_is_a_storage_error_and_the_app_rolls_back(
    url: str, outbox: Outbox, cms_sandbox: Sandbox
) -> None:
    with psycopg.connect(url) as connection:
        with pytest.raises(psycopg.errors.DivisionByZero):
            connection.execute("SELECT 1 / 0")
        result = outbox.within(connection).track_lead(**lead())  # the transaction is failed already
        assert (result["success"], result["type"]) == (False, "storage_error")
        assert PASSWORD not in result["error"]
        connection.rollback()
    assert outbox.flush(timeout=5)
    assert cms_sandbox.requests == []


def run_django(url: str, sandbox_url: str, *, database_setting: bool) -> dict[str, Any]:
    """tests/outbox/django_child.py in a process of its own (Django's settings are once per process)."""
    run = subprocess.run(
        [sys.executable, "-m", "tests.outbox.django_child", url, sandbox_url, str(int(database_setting))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert PASSWORD not in run.stdout + run.stderr
    return json.loads(run.stdout.splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("database_setting", [False, True], ids=["within(connection)", "CMS_OUTBOX_DATABASE"])
def test_django_atomic_commit_and_rollback(url: str, database_setting: bool) -> None:
    sandbox = Sandbox()
    with sandbox.serve() as sandbox_url:
        outcome = run_django(url, sandbox_url, database_setting=database_setting)
    assert outcome["flushed"] is True
    assert [lead.event_name for lead in sandbox.leads] == ["committed", "autocommit"]
    assert outcome["orders"] == ["committed", "autocommit"]


# -- a fleet is one queue -----------------------------------------------------------------------------------------


def enqueue(url: str, events: list[tuple[str, str]], token: str = CHILD_TOKEN) -> None:
    """Store leads `(customer, key)` as the app would (one commit each), without delivering them here."""
    store = PostgresStore(url, scope=token_scope(token))
    try:
        for customer, key in events:
            fields = {"eventName": key, "customerExternalId": customer, "clickId": "c"}
            store.enqueue(new_event(key, customer, fields), now=time.time(), max_pending=10**6)
    finally:
        store.close()


def by_key(server: LoopbackServer) -> dict[str, list[float]]:
    times: defaultdict[str, list[float]] = defaultdict(list)
    for request in server.requests:
        times[request.headers["Idempotency-Key"]].append(request.at)
    return times


def test_three_processes_share_one_pace(url: str, server: LoopbackServer, child: Child) -> None:
    enqueue(url, [(f"c{number}", f"k{number}") for number in range(24)])
    processes = [child("deliver", url, server.url, "600", "10") for _ in range(3)]  # 10 a second, together
    for process in processes:
        assert summary(process)["flushed"] is True
    times = sorted(request.at for request in server.requests)
    assert len(times) == 24
    # Each send took the next slot of one pace, in the database's clock: 9 sends span 8 intervals at least, less
    # how much later than its slot the first of them arrived (up to 0.06 s seen on a busy machine: a 0.05 s
    # allowance over 4 intervals failed). Three paces of their own would send 9 in about 0.3 s.
    spans = [later - earlier for earlier, later in zip(times, times[8:], strict=False)]
    assert min(spans) >= 8 * 0.1 - 0.2, spans


def test_a_429_seen_by_one_process_holds_every_process(url: str, server: LoopbackServer, child: Child) -> None:
    enqueue(url, [(f"c{number}", f"k{number}") for number in range(60)])
    server.queue(*[Reply(delay=0.02)] * 9, Reply(status=429, headers={"Retry-After": "2"}))
    server.default = Reply(delay=0.02)
    processes = [child("deliver", url, server.url, "0", "10") for _ in range(3)]  # unpaced
    for process in processes:
        assert summary(process)["flushed"] is True
    throttled = server.requests[9].at  # the replies go in the order the requests came
    # Requests already on their way when the 429 came may still arrive; then nothing until Retry-After passed.
    during = [request.at - throttled for request in server.requests if 0.5 < request.at - throttled < 1.9]
    assert during == []
    assert len(by_key(server)) == 60


def test_a_customer_s_events_go_in_commit_order_across_processes(
    url: str, server: LoopbackServer, child: Child
) -> None:
    # Two app connections commit the events of five customers by turns; three processes deliver, with 503s that
    # make some events wait for a retry while others go ahead.
    scope = token_scope(CHILD_TOKEN)
    store = PostgresStore(url, scope=scope)
    committed: defaultdict[str, list[str]] = defaultdict(list)
    try:
        for number in range(40):
            customer = f"c{number % 5}"
            fields = {"eventName": f"e{number}", "customerExternalId": customer, "clickId": "c"}
            with psycopg.connect(url) as connection:
                through = store.through(connection)
                through.enqueue(new_event(f"k{number}", customer, fields), now=time.time(), max_pending=999)
                connection.commit()
            committed[customer].append(f"k{number}")
    finally:
        store.close()
    server.queue(*[Reply(status=503) if number % 7 == 3 else Reply() for number in range(40)])
    processes = [child("deliver", url, server.url, "0", "10") for _ in range(3)]
    for process in processes:
        assert summary(process)["flushed"] is True
    delivered: defaultdict[str, list[str]] = defaultdict(list)
    for number, request in enumerate(server.requests):
        if number < 40 and number % 7 == 3:  # answered 503: sent again later
            continue
        delivered[request.json["customerExternalId"]].append(request.headers["Idempotency-Key"])
    assert dict(delivered) == dict(committed)


def test_overlapping_transactions_of_one_customer_go_in_commit_order(
    url: str, outbox: Outbox, cms_sandbox: Sandbox
) -> None:
    with psycopg.connect(url) as earlier, psycopg.connect(url) as later:
        outbox.within(earlier).track_lead(**lead(event_name="first_id_committed_second", customer_external_id="c"))
        outbox.within(later).track_lead(**lead(event_name="second_id_committed_first", customer_external_id="c"))
        later.commit()
        wait_until(lambda: len(cms_sandbox.requests) == 1)
        earlier.commit()
    assert outbox.flush(timeout=10)
    assert sent_names(cms_sandbox) == ["second_id_committed_first", "first_id_committed_second"]


def test_a_process_killed_mid_send_is_taken_over_with_the_same_key(
    url: str, server: LoopbackServer, child: Child
) -> None:
    enqueue(url, [(f"c{number}", f"k{number}") for number in range(10)])
    server.default = Reply(delay=0.15)  # within the children's 0.25 s read timeout
    doomed = child("deliver", url, server.url, "0", "3")
    wait_until(lambda: len(server.requests) >= 2)
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate()
    server.default = Reply()
    assert summary(child("deliver", url, server.url, "0", "3"))["flushed"] is True
    sent = Counter({key: len(times) for key, times in by_key(server).items()})
    assert sorted(sent) == sorted(f"k{number}" for number in range(10))
    assert sum(sent.values()) - 10 <= 1  # only the event on the wire when it died may go twice, same key


def test_a_hung_process_loses_its_claims_after_the_lease(url: str, server: LoopbackServer, child: Child) -> None:
    enqueue(url, [(f"c{number}", f"k{number}") for number in range(10)])
    server.default = Reply(delay=0.15)  # within the children's 0.25 s read timeout
    hung = child("deliver", url, server.url, "0", "3")
    try:
        wait_until(lambda: len(server.requests) >= 1)
        hung.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        rescuer = child("deliver", url, server.url, "0", "3")
        outcome = summary(rescuer)
        assert outcome["flushed"] is True
        assert time.monotonic() - started >= 2  # not before the 3 s lease ran out (less the wait to start)
    finally:
        hung.send_signal(signal.SIGCONT)
    summary(hung)
    sent = Counter({key: len(times) for key, times in by_key(server).items()})
    assert sorted(sent) == sorted(f"k{number}" for number in range(10))
    assert sum(sent.values()) - 10 <= 1  # the one in flight when it hung; its later claims it no longer holds


def test_many_processes_starting_on_an_empty_database(
    postgres: PostgresServer, server: LoopbackServer, child: Child
) -> None:
    target = postgres.new_url()
    processes = [child("enqueue-and-flush", target, server.url, str(number), str(number + 1)) for number in range(8)]
    for process in processes:
        outcome = summary(process)
        assert outcome["flushed"] is True
    assert len(by_key(server)) == 8
    with psycopg.connect(target) as connection:
        assert connection.execute("SELECT version FROM cms_outbox_schema").fetchall() == [(1,)]


# -- bad days -----------------------------------------------------------------------------------------------------


def test_an_unreachable_database_at_construction_is_a_clear_error(postgres: PostgresServer) -> None:
    target = f"postgresql://app:{PASSWORD}@127.0.0.1:9/app?connect_timeout=2"
    with pytest.raises(
        OSError, match=re.escape("Cannot open the outbox postgresql://app:***@127.0.0.1:9/app")
    ) as raised:
        Outbox(target, TOKEN)
    assert PASSWORD not in str(raised.value)


def test_the_database_restarted_under_a_running_outbox(
    postgres: PostgresServer, url: str, cms_sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with cms_sandbox.client() as client, Outbox(url, client=client, rate_limit=None) as outbox:
        assert outbox.track_lead(**lead(event_name="before"))["success"]
        assert outbox.flush(timeout=10)
        postgres.stop()
        try:
            down = outbox.track_lead(**lead(event_name="while_down"))
            assert (down["success"], down["type"]) == (False, "storage_error")
            assert PASSWORD not in down["error"]
            assert outbox.flush(timeout=1) is False
        finally:
            postgres.start()
        wait_until(lambda: outbox.track_lead(**lead(event_name="after"))["success"], timeout=30)
        assert outbox.flush(timeout=30)
        outbox.close(timeout=0)
    assert sent_names(cms_sandbox) == ["before", "after"]
    assert PASSWORD not in caplog.text


# -- secrets ------------------------------------------------------------------------------------------------------


def test_the_password_and_the_token_stay_out_of_everything(
    url: str, cms_sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "token-for-secrets-test-77aa"
    with Outbox(url, token, "http://127.0.0.1:9", rate_limit=None) as outbox, psycopg.connect(url) as connection:
        assert outbox.track_lead(**lead())["success"]
        outbox.flush(timeout=0.5)
        names = [thread.name for thread in threading.enumerate()]
        shown = [repr(outbox), *names, str(outbox.stats()), repr(outbox.within(connection))]
        outbox.close(timeout=0)
    assert all(PASSWORD not in text for text in shown), shown
    assert any("***" in name for name in names if name.startswith("cms-outbox"))
    assert PASSWORD not in caplog.text
    with psycopg.connect(url) as connection:
        tables = [
            name for (name,) in connection.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'cms_%'")
        ]
        dump = "".join(str(connection.execute(f"SELECT * FROM {table}").fetchall()) for table in tables)
    assert token not in dump
    assert PASSWORD not in dump


def test_the_cli_on_a_url(url: str, outbox: Outbox, cms_sandbox: Sandbox) -> None:
    cms_sandbox.fail_next(422)
    outbox.track_lead(**lead())
    assert outbox.flush(timeout=10)
    outbox.close()  # nothing delivers what --retry-failed queues again
    environment = {**os.environ, "CMS_BEARER_TOKEN": "x" * 12}

    def cms(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cms_python", "outbox", *arguments],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env=environment,
        )

    counts = cms(url)
    assert (counts.returncode, json.loads(counts.stdout)) == (0, {"pending": 0, "failed": 1, "delivered": 0})
    failed = cms(url, "--failed")
    assert json.loads(failed.stdout)["result"]["status_code"] == 422
    assert "1 failed event(s) queued again" in cms(url, "--retry-failed").stdout
    assert json.loads(cms(url).stdout)["pending"] == 1
    unreachable = cms(f"postgresql://app:{PASSWORD}@127.0.0.1:9/app?connect_timeout=2")
    assert unreachable.returncode == 1
    assert "Cannot open the outbox postgresql://app:***@" in unreachable.stderr
    for run in (counts, failed, unreachable):
        assert PASSWORD not in run.stdout + run.stderr


def test_migrate_creates_the_tables_and_prints_their_sql(postgres: PostgresServer) -> None:
    target = postgres.new_url(password=PASSWORD)

    def cms(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cms_python", "outbox", "migrate", *arguments],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    printed = cms("--sql")
    assert printed.returncode == 0
    assert "CREATE TABLE cms_outbox_events" in printed.stdout
    migrated = cms(target)
    assert migrated.returncode == 0, migrated.stderr
    assert PASSWORD not in migrated.stdout + migrated.stderr
    with psycopg.connect(target) as connection:
        assert connection.execute("SELECT version FROM cms_outbox_schema").fetchall() == [(1,)]
    again = cms(target)  # in place: nothing to do
    assert again.returncode == 0


def test_the_sql_printed_is_what_the_outbox_would_create(postgres: PostgresServer) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "cms_python", "outbox", "migrate", "--sql"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    target = postgres.new_url()
    with psycopg.connect(target, autocommit=True) as connection:
        connection.execute(printed.encode())
    with Outbox(target, TOKEN, "http://127.0.0.1:9") as made:  # takes the tables as they are
        assert made.track_lead(**lead())["success"]
        made.close(timeout=0)


def test_through_pgbouncer_in_transaction_mode(postgres: PostgresServer, cms_sandbox: Sandbox) -> None:
    # Two server sessions for every client: a prepared statement, a LISTEN or a session lock kept between
    # transactions would be found missing (or another client's) on the next one.
    if shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists():
        if REQUIRED:
            pytest.fail("CMS_REQUIRE_POSTGRES=1 but no pgbouncer (Debian: apt-get install pgbouncer)")
        pytest.skip("needs pgbouncer (Debian: apt-get install pgbouncer)")
    database = postgres.new_database()
    with postgres.bouncer() as port:
        target = f"postgresql://postgres@127.0.0.1:{port}/{database}"
        with (
            cms_sandbox.client() as client,
            Outbox(target, client=client, rate_limit=None) as first,
            Outbox(target, client=client, rate_limit=None) as second,
            psycopg.connect(target, prepare_threshold=None) as connection,
        ):
            for number in range(30):
                tracker = first if number % 2 else second
                assert tracker.track_lead(**lead(customer_external_id=f"c{number % 7}", event_name=f"e{number}"))[
                    "success"
                ]
            first.within(connection).track_lead(**lead(event_name="rolled_back"))
            connection.rollback()
            second.within(connection).track_lead(**lead(event_name="committed"))
            connection.commit()
            assert first.flush(timeout=30)
            assert second.flush(timeout=30)
            assert first.stats()["pending"] == 0
    names = sent_names(cms_sandbox)
    assert sorted(names) == sorted([*(f"e{number}" for number in range(30)), "committed"])
    assert len(set(names)) == len(names)


def test_a_customer_left_without_a_head_gets_one_back(url: str, outbox: Outbox, cms_sandbox: Sandbox) -> None:
    store = PostgresStore(url, scope=token_scope(CHILD_TOKEN))
    try:
        store.enqueue(new_event("k1", "c"), now=time.time(), max_pending=99)
        store.maintain(time.time())  # promoted: c's head
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("DELETE FROM cms_outbox_heads")  # by hand
        assert store.claim("me", time.time(), 10, None).events == []  # nothing can be sent: no head
        store._last_forget = -math.inf
        store.maintain(time.time())  # the hourly housekeeping
        (event,) = store.claim("me", time.time(), 10, None).events
        assert event.idempotency_key == "k1"
    finally:
        store.close()
