"""The PostgreSQL outbox attacked by someone who did not write it (issue 18): each test is one finding, reproduced
against a real server, with real processes where it takes them; each was fixed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg2
import psycopg2.extras
import pytest
from psycopg.rows import dict_row

from cms_python import Outbox
from cms_python._outbox.postgres import PostgresStore, link, sql
from cms_python._outbox.store import NewEvent, token_scope
from cms_python.testing import SANDBOX_TOKEN, Sandbox

from ..conftest import TOKEN
from ..support.postgres import PostgresServer
from ..support.servers import LoopbackServer
from ..support.waits import wait_until
from .child import TOKEN as CHILD_TOKEN
from .conftest import lead, new_event

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "h0stile-Pw-77"


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    return postgres.new_url(password=PASSWORD)


@pytest.fixture
def outbox(url: str, cms_sandbox: Sandbox) -> Iterator[Outbox]:
    with cms_sandbox.client() as client, Outbox(url, client=client, rate_limit=None) as made:
        yield made
        made.close(timeout=0)


def sent_names(sandbox: Sandbox) -> list[str]:
    return [request.json["eventName"] for request in sandbox.requests]


def event(key: str, customer: str) -> NewEvent:
    return new_event(key, customer, {"eventName": key, "customerExternalId": customer, "clickId": "c"})


# -- the app's transaction ----------------------------------------------------------------------------------------


def test_within_a_connection_whose_rows_are_dicts(url: str, outbox: Outbox, cms_sandbox: Sandbox) -> None:
    # Apps often make their connections hand out dicts (psycopg's dict_row, psycopg2's RealDictCursor): the outbox's
    # statements through them must still read their rows, and track_* must never raise.
    with psycopg.connect(url, row_factory=dict_row) as connection:
        tracker = outbox.within(connection)
        assert tracker.track_lead(**lead(event_name="psycopg_dict", idempotency_key="k1"))["success"]
        assert tracker.track_lead(**lead(event_name="psycopg_dict", idempotency_key="k1"))["data"]["duplicate"]
        connection.commit()
    classic = psycopg2.connect(url, cursor_factory=psycopg2.extras.RealDictCursor)
    try:
        assert outbox.within(classic).track_lead(**lead(event_name="psycopg2_dict"))["success"]
        classic.commit()
    finally:
        classic.close()
    assert outbox.flush(timeout=10)
    assert sent_names(cms_sandbox) == ["psycopg_dict", "psycopg2_dict"]


# -- a fleet ------------------------------------------------------------------------------------------------------


def test_an_outcome_recorded_while_another_process_promotes_strands_nothing(url: str, cms_sandbox: Sandbox) -> None:
    # Process A records the delivery of customer c's only promoted event (its head) while process B promotes c's
    # next event and has not committed yet: A's statement does not see that event promoted and drops c's head; B's
    # insert of the head found A's head still there and did nothing. Unless one waits for the other, c's next event
    # is pending, promoted, and no head: never claimed, never sent.
    scope = token_scope(cms_sandbox.token or SANDBOX_TOKEN)  # the sandbox client's, which delivers below
    first = PostgresStore(url, scope=scope)
    try:
        first.enqueue(event("k1", "c"), now=first.clock.now(), max_pending=99)
        first.maintain(first.clock.now())
        claim = first.claim("process-a", first.clock.now(), 10, None)
        assert [event.idempotency_key for event in claim.events] == ["k1"]
        first.enqueue(event("k2", "c"), now=first.clock.now(), max_pending=99)
        with psycopg.connect(url) as promoting:  # B's promotion, as `PostgresStore._promote` runs it
            promoting.execute("SELECT 1 FROM cms_outbox_pace WHERE scope = %s FOR UPDATE", (scope,))
            promoting.execute(sql.PROMOTE, {"scope": scope, "owner": "process-b", "limit": 100})
            recorded = threading.Thread(target=first.delivered, args=(claim.events, first.clock.now()))
            recorded.start()
            recorded.join(1)  # done at once unless it waits for the promotion
            promoting.commit()
        recorded.join(30)
        assert not recorded.is_alive()
    finally:
        first.close()
    with cms_sandbox.client() as client, Outbox(url, client=client, rate_limit=None) as delivering:
        assert delivering.flush(timeout=15), delivering.stats()
        delivering.close(timeout=0)
    assert sent_names(cms_sandbox) == ["k2"]


FREEZE_MID_CLAIM = """
import os, signal, sys, time
import psycopg
from cms_python import Outbox
from cms_python._outbox.postgres import sql

execute = psycopg.Connection.execute

def execute_or_freeze(self, query, *args, **kwargs):
    if query is sql.CLAIM:  # the scope's pace row is locked (FOR UPDATE) in this transaction by now
        print("frozen", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
    return execute(self, query, *args, **kwargs)

psycopg.Connection.execute = execute_or_freeze
outbox = Outbox(sys.argv[1], sys.argv[2], "http://127.0.0.1:9", rate_limit=None)
outbox.track_lead(event_name="frozen", customer_external_id="f", click_id="c")
time.sleep(120)
"""


@pytest.mark.timeout(180)
def test_a_process_frozen_in_a_claim_does_not_stop_the_fleet(url: str, cms_sandbox: Sandbox) -> None:
    # A process stopped (SIGSTOP, a VM paused, a container frozen, its network gone) in the middle of a claim holds
    # the scope's pace row locked: every other process of the fleet waits for it, for as long as the server keeps
    # that session (hours, for a peer that vanished).
    frozen = subprocess.Popen(
        [sys.executable, "-c", FREEZE_MID_CLAIM, url, cms_sandbox.token or SANDBOX_TOKEN],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    with cms_sandbox.client() as client:
        alive = Outbox(url, client=client, rate_limit=None)
        try:
            assert frozen.stdout is not None
            assert frozen.stdout.readline().strip() == "frozen"
            assert alive.track_lead(**lead(event_name="alive", customer_external_id="a"))["success"]
            # Sent once the server ends the frozen session (`IDLE_IN_TRANSACTION`, 10 s: both events go then on a
            # quiet machine). Its own event only, not flush(): the frozen process's event was seen going tens of
            # seconds later on a machine loaded far past CI's.
            wait_until(lambda: "alive" in sent_names(cms_sandbox), 60, "the event of the process that runs")
        finally:
            frozen.send_signal(signal.SIGCONT)
            frozen.kill()  # its session ends: what it held is free, and `alive` can close
            frozen.communicate()
            alive.close(timeout=0)


# -- secrets ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        f"postgresql://app:{PASSWORD}@[::1:5432/app",  # libpq quotes the whole URL back
        f"postgresql://app:{PASSWORD}%zz@127.0.0.1:9/app",  # libpq quotes the bad token: the password
        f"postgresql://app@127.0.0.1:9/app?password={PASSWORD}%zz",
    ],
    ids=["bad-host", "bad-escape-in-password", "bad-escape-in-query"],
)
def test_a_url_libpq_cannot_read_is_named_without_its_password(target: str) -> None:
    with pytest.raises(ValueError, match="Not a PostgreSQL URL") as raised:
        Outbox(target, TOKEN)
    assert PASSWORD not in str(raised.value)
    inspected = subprocess.run(
        [sys.executable, "-m", "cms_python", "outbox", target], capture_output=True, text=True, check=False, timeout=60
    )
    assert inspected.returncode == 1
    assert PASSWORD not in inspected.stdout + inspected.stderr


def test_a_keyword_value_connection_string_is_not_taken_for_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libpq's other spelling of a connection string: taken for a path, it became an SQLite file named after it,
    # password included, and the password showed in the repr, the logs and the CLI's messages.
    monkeypatch.chdir(tmp_path)
    target = f"host=127.0.0.1 port=9 dbname=app user=app password={PASSWORD}"
    with pytest.raises(ValueError, match="postgresql://") as raised:
        Outbox(target, TOKEN, "http://127.0.0.1:9")
    assert PASSWORD not in str(raised.value)
    inspected = subprocess.run(
        [sys.executable, "-m", "cms_python", "outbox", target], capture_output=True, text=True, check=False, timeout=60
    )
    assert inspected.returncode == 2
    assert PASSWORD not in inspected.stdout + inspected.stderr
    assert list(tmp_path.iterdir()) == []


DJANGO_OPTIONS = """
import json, sys
import django
from django.conf import settings
from psycopg.conninfo import conninfo_to_dict

url, schema, password = sys.argv[1:]
parts = conninfo_to_dict(url)
settings.configure(
    DATABASES={"default": {
        "ENGINE": "django.db.backends.postgresql", "NAME": parts["dbname"], "USER": parts["user"],
        "PASSWORD": password, "HOST": parts["host"], "PORT": parts["port"],
        "OPTIONS": {"options": f"-c search_path={schema}"},
    }},
    INSTALLED_APPS=[], CMS_BEARER_TOKEN="django-options-token-1", CMS_HOST="http://127.0.0.1:9",
    CMS_OUTBOX_DATABASE="default",
)
django.setup()
from cms_python.integrations.django import _database_url, outbox
seen = conninfo_to_dict(_database_url("default"))
result = outbox().track_lead(click_id="c", event_name="e", customer_external_id="u")
print(json.dumps({"password": seen.get("password"), "options": seen.get("options"), "success": result["success"]}))
outbox().close(timeout=0)
"""


def test_django_settings_with_spaces_reach_the_outbox_s_connections_as_written(postgres: PostgresServer) -> None:
    # Django's usual way to pick a schema is OPTIONS {"options": "-c search_path=..."}, with a space; a password may
    # hold one too. urlencode writes a space as "+", which libpq does not read back as a space.
    url = postgres.new_url()
    schema = url.rpartition("%3D")[2]
    password = "a b+c"
    run = subprocess.run(
        [sys.executable, "-c", DJANGO_OPTIONS, url, schema, password],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert password not in run.stdout.replace('"password": "a b+c"', "") + run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == {
        "password": password,
        "options": f"-c search_path={schema}",
        "success": True,
    }


# -- bad days -----------------------------------------------------------------------------------------------------


def test_the_grants_the_docs_list_for_within_are_enough(postgres: PostgresServer, cms_sandbox: Sandbox) -> None:
    # docs/fleets.md lists what the app's own database user needs for within(): exactly that, and no more.
    url = postgres.new_url()
    schema = url.rpartition("%3D")[2]
    role = f"app_{os.urandom(3).hex()}"
    with cms_sandbox.client() as client, Outbox(url, client=client, rate_limit=None) as outbox:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"CREATE ROLE {role} LOGIN")
            connection.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            connection.execute(f"GRANT INSERT, SELECT ON {schema}.cms_outbox_events TO {role}")
            connection.execute(f"GRANT USAGE ON SEQUENCE {schema}.cms_outbox_seq TO {role}")
            connection.execute(f"GRANT SELECT ON {schema}.cms_outbox_schema TO {role}")
        with psycopg.connect(url.replace("postgres@", f"{role}:{PASSWORD}@", 1)) as app:
            assert outbox.within(app).track_lead(**lead(event_name="granted", idempotency_key="k1"))["success"]
            assert outbox.within(app).track_lead(**lead(event_name="granted", idempotency_key="k1"))["data"][
                "duplicate"
            ]
            app.commit()
        assert outbox.flush(timeout=30)
    assert sent_names(cms_sandbox) == ["granted"]


def test_the_cli_says_what_the_database_refused_without_a_traceback(postgres: PostgresServer) -> None:
    # A user who may only read the tables (GRANT SELECT): looking works, retrying or purging cannot.
    url = postgres.new_url()
    Outbox(url, TOKEN, "http://127.0.0.1:9").close()
    schema = url.rpartition("%3D")[2]
    role = f"reader_{os.urandom(3).hex()}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN")
        connection.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        connection.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    reader = url.replace("postgres@", f"{role}:{PASSWORD}@", 1)
    for arguments in ([], ["--retry-failed"], ["--purge-failed", "--yes"]):
        run = subprocess.run(
            [sys.executable, "-m", "cms_python", "outbox", reader, *arguments],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert "Traceback" not in run.stderr, run.stderr
        assert run.returncode == (0 if not arguments else 1), arguments
        assert PASSWORD not in run.stdout + run.stderr
        if arguments:
            assert "permission denied for table cms_outbox_events" in run.stderr


class FreezingProxy:
    """A TCP proxy in front of the server that can stop forwarding (`freeze`): the peer's kernel still
    acknowledges what is sent, as with a PgBouncer or a server process that hangs."""

    def __init__(self, port: int) -> None:
        self._upstream = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.frozen = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                while self.frozen.is_set():
                    time.sleep(0.05)
                sink.sendall(data)
        except OSError:
            pass
        finally:  # the other direction's thread ends too
            source.close()
            sink.close()

    def close(self) -> None:
        self._listener.close()
        for each in self._sockets:
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)  # wakes the threads' recv; they close the sockets
            each.close()


@pytest.fixture
def deadline(monkeypatch: pytest.MonkeyPatch) -> float:
    """A shorter `DEADLINE` for the outbox's own connections, for the tests that wait it out."""
    monkeypatch.setattr(link, "DEADLINE", 3.0)
    return 3.0


def test_track_returns_when_the_database_hangs(url: str, postgres: PostgresServer, deadline: float) -> None:
    # A frozen PgBouncer, a server stopped: the kernel still acknowledges, so no TCP timeout fires. Each app thread
    # calling track_* meanwhile (the later ones queue behind the first) gets `storage_error` past the deadline.
    proxy = FreezingProxy(postgres.port)
    target = url.replace(f":{postgres.port}/", f":{proxy.port}/", 1)
    made = Outbox(target, TOKEN, "http://127.0.0.1:9", rate_limit=None)
    results: list[dict[str, Any]] = []
    try:
        assert made.track_lead(**lead(event_name="before"))["success"]
        proxy.frozen.set()
        callers = [
            threading.Thread(target=lambda: results.append(dict(made.track_lead(**lead()))), daemon=True)
            for _ in range(3)
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(deadline + link.CANCEL_GRACE + 20)
        answered = list(results)
        proxy.frozen.clear()
        after = made.track_lead(**lead(event_name="after"))  # on a new connection
    finally:
        proxy.frozen.clear()
        made.close(timeout=0)
        proxy.close()
    assert [result["type"] for result in answered] == ["storage_error"] * 3
    assert all("no answer from the database within 3 s" in result["error"] for result in answered)
    # The first one was cut off: its insert may have reached the server, and the message says so.
    assert any("what was sent may yet be done" in result["error"] for result in answered)
    assert after["success"]


def test_a_lock_on_the_outbox_s_tables_costs_track_the_deadline_and_stores_nothing(url: str, deadline: float) -> None:
    # A `LOCK TABLE` (a migration, a VACUUM FULL): the insert waits for it until the deadline, then is cancelled at
    # the server, so that the event the app was told is not stored is not stored once the lock goes either.
    made = Outbox(url, TOKEN, "http://127.0.0.1:9", rate_limit=None)
    try:
        with psycopg.connect(url) as locking:
            locking.execute("LOCK TABLE cms_outbox_events IN ACCESS EXCLUSIVE MODE")
            refused = made.track_lead(**lead(event_name="refused"))
            locking.rollback()
            (stored,) = locking.execute("SELECT count(*) FROM cms_outbox_events").fetchone() or (None,)
        assert made.track_lead(**lead(event_name="after"))["success"]
    finally:
        made.close(timeout=0)
    assert refused["type"] == "storage_error"
    assert "(cancelled)" in refused["error"]
    assert stored == 0


def test_flush_waits_through_a_database_restart(
    postgres: PostgresServer, url: str, outbox: Outbox, cms_sandbox: Sandbox
) -> None:
    # flush_on_exit during a deploy that restarts the database too: the flush waits for it, within its timeout.
    assert outbox.track_lead(**lead(event_name="queued"))["success"]
    cms_sandbox.fail_next(503)  # the event is still pending when the database goes
    postgres.stop()
    restart = threading.Timer(2, postgres.start)
    restart.start()
    try:
        assert outbox.flush(timeout=60)
    finally:
        restart.join()
    assert "queued" in sent_names(cms_sandbox)


def test_within_a_connection_to_another_outbox_s_tables_is_not_silent(
    postgres: PostgresServer, outbox: Outbox, cms_sandbox: Sandbox
) -> None:
    # The app's connection reaches other outbox tables (another database, another search_path): an event committed
    # there is where no delivery of this outbox looks. It is refused instead, and nothing is written there.
    elsewhere = postgres.new_url()
    Outbox(elsewhere, TOKEN, "http://127.0.0.1:9").close()  # e.g. `cms outbox migrate` run with another search_path
    with psycopg.connect(elsewhere) as connection:
        result = outbox.within(connection).track_lead(**lead(event_name="lost"))
        connection.commit()
        (stored,) = connection.execute("SELECT count(*) FROM cms_outbox_events").fetchone() or (None,)
    assert not result["success"]
    assert result["type"] == "storage_error"
    assert "another database or schema" in result["error"]
    assert stored == 0


def test_tables_made_anew_under_a_running_outbox_take_its_events(url: str, outbox: Outbox) -> None:
    # `cms outbox migrate` after the tables were dropped: a new outbox id, which the running outbox adopts.
    assert outbox.track_lead(**lead(event_name="before"))["success"]
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE cms_outbox_schema")
        connection.execute("CREATE TABLE cms_outbox_schema (version integer NOT NULL, outbox text NOT NULL)")
        connection.execute("INSERT INTO cms_outbox_schema VALUES (%s, 'made-anew')", (sql.SCHEMA_VERSION,))
    assert outbox.track_lead(**lead(event_name="after"))["success"]
    assert outbox.stats()["pending"] + outbox.stats()["delivered"] == 2


def test_cms_outbox_deliver_outlives_a_database_restart(postgres: PostgresServer, url: str) -> None:
    # The sidecar / cron deliverer: the database restarting under it (a failover, an upgrade) must not end it.
    server = LoopbackServer()
    deliverer = subprocess.Popen(
        [sys.executable, "-m", "cms_python", "outbox", "deliver", url, "--host", server.url, "--rate-limit", "0"],
        env={**os.environ, "CMS_BEARER_TOKEN": CHILD_TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        enqueue_lead(url, "before")
        wait_until(lambda: len(server.requests) == 1 or deliverer.poll() is not None, what="the first request")
        postgres.stop()
        try:
            time.sleep(2)  # it looks meanwhile
        finally:
            postgres.start()
        enqueue_lead(url, "after")
        wait_until(lambda: len(server.requests) == 2 or deliverer.poll() is not None, 60, "the second request")
        assert deliverer.poll() is None
    finally:
        deliverer.terminate()
        _, errors = deliverer.communicate(timeout=60)
        server.close()
    assert [request.json["eventName"] for request in server.requests] == ["before", "after"], errors
    assert PASSWORD not in errors


def enqueue_lead(url: str, name: str) -> None:
    """A lead committed as another process of the app would, under the CLI child's token."""
    store = PostgresStore(url, scope=token_scope(CHILD_TOKEN))
    try:
        store.enqueue(event(name, "c"), now=time.time(), max_pending=99)
    finally:
        store.close()


def test_a_claim_of_another_machine_with_the_same_host_name_is_not_taken_as_a_dead_process_s(
    url: str, cms_sandbox: Sandbox
) -> None:
    # A claim's owner names its machine by host name and PID namespace. Two machines may share both: the same
    # host name (an image's, a `--hostname` given to every replica) and, every Linux machine, the same inode for
    # its first PID namespace (and the same ones for the containers it starts in the same order after boot). The
    # PID of a process sending on the other machine is then looked up here, found missing, and its claims taken
    # over at once: two live processes send the event.
    scope = token_scope(cms_sandbox.token or SANDBOX_TOKEN)
    store = PostgresStore(url, scope=scope)
    try:
        store.enqueue(event("k1", "c"), now=store.clock.now(), max_pending=99)
        store.maintain(store.clock.now())
        namespace = os.stat("/proc/self/ns/pid").st_ino
        elsewhere = f"{socket.gethostname()}:{namespace}|{2**22 + 17}|0123456789ab"  # a PID no process has here
        assert store.claim(elsewhere, store.clock.now(), 10, None).events  # held for 60 s, sending over there
    finally:
        store.close()
    with cms_sandbox.client() as client, Outbox(url, client=client, rate_limit=None) as here:
        assert not here.flush(timeout=3)
        here.close(timeout=0)
    assert cms_sandbox.requests == []


# -- issue 18, second round: the deadline, flush, and the outbox's own tables --------------------------------------


@pytest.fixture
def frozen_target(url: str, postgres: PostgresServer) -> Iterator[tuple[str, FreezingProxy]]:
    """The test's database through a `FreezingProxy`: the URL, and the proxy (not frozen yet)."""
    proxy = FreezingProxy(postgres.port)
    try:
        yield url.replace(f":{postgres.port}/", f":{proxy.port}/", 1), proxy
    finally:
        proxy.frozen.clear()
        proxy.close()


def test_flush_returns_within_its_timeout_when_the_database_hangs(
    frozen_target: tuple[str, FreezingProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    # flush(timeout) promises False once `timeout` passed; one call to a database that hangs took the whole
    # DEADLINE (15 s, plus the cancel's grace) whatever the timeout. A deadline far longer than the timeout here.
    monkeypatch.setattr(link, "DEADLINE", 60.0)
    target, proxy = frozen_target
    made = Outbox(target, TOKEN, "http://127.0.0.1:9", rate_limit=None)  # nothing listens: the event stays pending
    flushed: list[bool] = []
    try:
        assert made.track_lead(**lead())["success"]
        proxy.frozen.set()
        flushing = threading.Thread(target=lambda: flushed.append(made.flush(timeout=1)), daemon=True)
        flushing.start()
        flushing.join(20)  # 1 s, the cancel's grace, and a loaded machine's slack
        answered = list(flushed)
        proxy.frozen.clear()
        flushing.join(30)
    finally:
        made.close(timeout=0)
    assert answered == [False]


EXIT_WHILE_FROZEN = """
import sys
from cms_python import Outbox
from cms_python._outbox.postgres import link

link.DEADLINE = 60.0  # far longer than flush_on_exit
outbox = Outbox(sys.argv[1], "exit-while-frozen-token", "http://127.0.0.1:9", rate_limit=None, flush_on_exit=1)
print(outbox.track_lead(click_id="c", event_name="e", customer_external_id="u")["success"], flush=True)
sys.stdin.readline()
"""


@pytest.mark.timeout(180)
def test_exit_with_a_database_that_hangs_waits_about_flush_on_exit(frozen_target: tuple[str, FreezingProxy]) -> None:
    # At interpreter exit, close() flushes for `flush_on_exit` seconds, then releases the process's claims: each
    # of those calls waited the whole DEADLINE on a database that hangs (27 s for flush_on_exit=1 with the
    # default 15 s), past a container's grace period.
    target, proxy = frozen_target
    child = subprocess.Popen(
        [sys.executable, "-c", EXIT_WHILE_FROZEN, target],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline().strip() == "True"
        proxy.frozen.set()
        child.stdin.write("exit\n")
        child.stdin.flush()
        try:
            child.wait(timeout=30)  # 1 s, the cancel's grace, and a loaded machine's slack
        except subprocess.TimeoutExpired:
            pytest.fail("the process has not exited 30 s after the end of its script, with flush_on_exit=1")
    finally:
        proxy.frozen.clear()
        child.kill()
        _, errors = child.communicate(timeout=60)
    assert child.returncode == 0, errors


def test_housekeeping_that_outlasts_the_deadline_does_not_stop_delivery(
    outbox: Outbox, cms_sandbox: Sandbox, deadline: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hourly housekeeping mends heads with one statement over every pending event of the scope (2.7 s for a
    # backlog of a million here): past the deadline, on a larger backlog or a slower server, it is cut. It ran
    # before every claim until it succeeded: cut each time, no event of the process was sent any more.
    monkeypatch.setattr(sql, "MEND_HEADS", f"SELECT pg_sleep({deadline * 3}) WHERE %(scope)s::text IS NOT NULL")
    assert outbox.track_lead(**lead(event_name="sent"))["success"]
    assert outbox.flush(timeout=deadline * 10)
    assert sent_names(cms_sandbox) == ["sent"]
