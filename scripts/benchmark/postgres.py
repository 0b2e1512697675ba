"""The PostgreSQL outbox (`Outbox("postgresql://...")`), on a throwaway server of the bench's own on 127.0.0.1 (the
tests' `PostgresServer`: `initdb` into a temporary folder, fsync off, run as the postgres user when root), each
part in a schema of its own. Skipped, with a line saying why, where PostgreSQL's server binaries are missing;
with CMS_REQUIRE_POSTGRES=1 (as CI sets it), the bench fails instead.

- enqueue: `Outbox(url).track_lead` outside any transaction of the app's (on the outbox's own connection, a
  commit per event), µs per call, median and p99, among the file outboxes' enqueues (`enqueue.GROUP`), default
  pacing (its thread sends one a second meanwhile). No goal.
- within: the app's transactions, on its own psycopg 3 connection: BEGIN; `INSERT INTO orders (id, customer,
  amount) VALUES (...)`; `outbox.within(connection).track_sale(...)`; COMMIT. Each of the two is timed on its
  own, inside the transaction (BEGIN and COMMIT are the app's either way: not timed); they swap places every
  other round, so that neither always pays for being the transaction's first write. µs per call, each round's
  median; the goal: `within().track_sale` <= 1.5 x the INSERT.
- delivery: a backlog of stored leads (one customer each, stored beforehand as an app's enqueues would have
  stored them), delivered unpaced by 1 and by 3 processes at once: fresh interpreters
  (drivers/postgres_delivery_driver.py) that, told to start once they are up, run `Outbox(url, token, host,
  rate_limit=None)` then `flush()`. events/s from that signal to the last event recorded delivered, in the
  database's clock, which the outbox records it in (a process's `flush()` notices the other processes'
  deliveries only every 0.25 s, which would count against 3 processes); the goal: 3 processes >= 2 x one.
"""

from __future__ import annotations

import functools
import itertools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from cms_python import Outbox
from cms_python._outbox.postgres import PostgresStore  # to store a backlog beforehand
from cms_python._outbox.store import token_scope
from tests.support.postgres import INSTALL_HINT, REQUIRED, PostgresServer, binaries

from . import enqueue
from .common import DRIVERS, TOKEN, Goal, Measure, Sample, Scenario, Settings, sample, stored_lead

SECTION = "PostgreSQL outbox (its own server on 127.0.0.1)"
#: The delivery rows: this many processes delivering one backlog.
PROCESSES = (1, 3)
INSERT_ORDER = "INSERT INTO orders (id, customer, amount) VALUES (%s, %s, %s)"


def start_server() -> tuple[PostgresServer | None, str]:
    """A server for the PostgreSQL scenarios and the report's line on it; or None and the line saying why they are
    skipped. `RuntimeError` instead where they are required (CMS_REQUIRE_POSTGRES=1)."""
    if binaries() is None:
        if REQUIRED:
            raise RuntimeError(f"CMS_REQUIRE_POSTGRES=1, but {INSTALL_HINT} are missing")
        return None, f"PostgreSQL scenarios skipped: missing {INSTALL_HINT}"
    server = PostgresServer()
    with psycopg.connect(server.url) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return server, f"PostgreSQL {row[0] if row else '?'}, a throwaway server on 127.0.0.1 (fsync off)"


class Postgres(Scenario):
    def __init__(self, server: PostgresServer, host: str, settings: Settings) -> None:
        super().__init__()
        self._server, self._host = server, host
        self._transactions, self._backlog = settings.postgres_transactions, settings.postgres_backlog
        url = server.new_url()
        self._outbox = Outbox(url, TOKEN, host)  # default pacing, as an app runs it
        self._app = psycopg.connect(url)
        self._app.execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, amount bigint NOT NULL)")
        self._app.commit()
        self._orders = itertools.count(1)
        self._rounds = 0

        label = 'Outbox "postgresql://", outside a transaction'
        times = functools.partial(enqueue.enqueue_times, self._outbox, settings.enqueue_calls)
        measures, contender = enqueue.enqueuer("postgresql", label, SECTION, times)
        self.measures |= measures
        self.groups[enqueue.GROUP] = [contender]

        self.measures["postgres_insert"] = Measure("INSERT INTO orders, in an app transaction", "µs/call", SECTION)
        self.measures["postgres_within"] = Measure(
            "Outbox.within(connection).track_sale, in the same", "µs/call", SECTION
        )
        self.groups["postgres within"] = [self._in_transactions]

        self.groups["postgres delivery"] = []
        for processes in PROCESSES:
            key = f"postgres_delivery_{processes}"
            label = f"Outbox delivery, rate_limit=None, {processes} process{'es' if processes > 1 else ''}"
            self.measures[key] = Measure(f"{label}, {self._backlog} events", "events/s", SECTION)
            self.groups["postgres delivery"].append(sample(key, functools.partial(self._delivery, processes)))

        # Warm up: the outbox's thread starts; the app's statements (and the outbox's, on it) get prepared.
        enqueue.enqueue_times(self._outbox, 50)
        for _ in range(20):
            number = next(self._orders)
            with self._app.transaction():
                self._order(number)
                self._sale(number)

    def _order(self, number: int) -> float:
        start = time.perf_counter()
        self._app.execute(INSERT_ORDER, (number, f"user_{number}", 4999))
        return time.perf_counter() - start

    def _sale(self, number: int) -> float:
        start = time.perf_counter()
        result = self._outbox.within(self._app).track_sale(
            click_id="id_123",
            event_name="purchase_completed",
            customer_external_id=f"user_{number}",
            invoice_id=f"inv_{number}",
            amount=4999,
            currency="USD",
        )
        elapsed = time.perf_counter() - start
        if not result["success"]:
            raise RuntimeError(f"the outbox refused a sale: {result!r}")
        return elapsed

    def _in_transactions(self) -> Sample:
        """The round's transactions: the median µs of the order's INSERT and of the sale's `within().track_sale`."""
        self._rounds += 1
        orders, sales = [], []
        for _ in range(self._transactions):
            number = next(self._orders)
            with self._app.transaction():
                if self._rounds % 2:
                    orders.append(self._order(number))
                    sales.append(self._sale(number))
                else:
                    sales.append(self._sale(number))
                    orders.append(self._order(number))
        return {
            "postgres_insert": statistics.median(orders) * 1e6,
            "postgres_within": statistics.median(sales) * 1e6,
        }

    def _delivery(self, processes: int) -> float:
        """events/s of `processes` processes delivering a backlog stored beforehand in a new schema."""
        url = self._server.new_url()
        store = PostgresStore(url, scope=token_scope(TOKEN))
        try:
            now = store.clock.now()
            backlog = [stored_lead(f"user_{number}", now) for number in range(self._backlog)]
            store.enqueue_many(backlog, now=now, max_pending=10**9)
        finally:
            store.close()
        with psycopg.connect(url, autocommit=True) as connection:
            drivers = [
                subprocess.Popen(
                    [sys.executable, DRIVERS / "postgres_delivery_driver.py", url, TOKEN, self._host],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for _ in range(processes)
            ]
            try:
                for driver in drivers:
                    assert driver.stdout is not None
                    if driver.stdout.readline().strip() != "ready":
                        raise RuntimeError(f"a delivery driver did not start (exit status {driver.wait()})")
                start = _database_time(connection)
                for driver in drivers:
                    assert driver.stdin is not None
                    driver.stdin.write("go\n")
                    driver.stdin.flush()
                for driver in drivers:
                    output, _ = driver.communicate(timeout=600)
                    if driver.returncode != 0 or json.loads(output) != {"flushed": True}:
                        raise RuntimeError(f"a delivery driver failed (exit status {driver.returncode}): {output!r}")
            finally:
                for driver in drivers:
                    if driver.poll() is None:
                        driver.kill()
                        driver.wait()
            row: Any = connection.execute(
                "SELECT count(*), max(done_at) FROM cms_outbox_events WHERE state = 'delivered'"
            ).fetchone()
            delivered, last = row
            if delivered != self._backlog:
                raise RuntimeError(f"{delivered} of {self._backlog} events delivered")
            schema: Any = connection.execute("SELECT current_schema()").fetchone()
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema[0])))
        return float(self._backlog / (last - start))

    def goals(self, measures: Mapping[str, Measure]) -> list[Goal]:
        within = measures["postgres_within"].median / measures["postgres_insert"].median
        delivery = measures["postgres_delivery_3"].median / measures["postgres_delivery_1"].median
        return [
            Goal("Outbox.within().track_sale / the app's INSERT, in its transaction", within, 1.5, "x", False),
            Goal("PostgreSQL outbox delivery: 3 processes / 1", delivery, 2.0, "x", True),
        ]

    def close(self) -> None:
        self._outbox.close(timeout=0)
        self._app.close()


def _database_time(connection: psycopg.Connection[Any]) -> float:
    """Now in the database's clock, in seconds (the outbox's `done_at`)."""
    row = connection.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])
