"""A throwaway PostgreSQL server for the tests: `initdb` into a temporary folder, a free port on 127.0.0.1, fsync
off. As root it runs as the `postgres` user (PostgreSQL refuses root). Each test gets a schema of its own
(`new_url`), reached through the URL's search path, so that tests share the server and never each other's tables."""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg

#: Set by .ci/run: a missing server is then a failure, not a skip.
REQUIRED = os.environ.get("CMS_REQUIRE_POSTGRES") == "1"
INSTALL_HINT = "PostgreSQL's server binaries (Debian: apt-get install postgresql)"


def binaries() -> Path | None:
    """The folder of `initdb` and `pg_ctl`: Debian's newest, else the PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda path: int(Path(path).parts[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


class PostgresServer:
    """A server of its own: `url` (the `postgres` database, superuser `postgres`, no password), `new_url()`."""

    def __init__(self) -> None:
        folder = binaries()
        if folder is None:
            raise FileNotFoundError(INSTALL_HINT)
        self._bin = folder
        self._root = Path(tempfile.mkdtemp(prefix="cms-postgres-"))
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self._root, user.pw_uid, user.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        self.data = self._root / "data"
        self._schemas = itertools.count(1)
        try:
            self._run("initdb", "-D", str(self.data), "--auth=trust", "--no-sync", "-U", "postgres", "-E", "UTF8")
            self._start_on_a_free_port()
        except BaseException:
            shutil.rmtree(self._root, ignore_errors=True)
            raise
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _start_on_a_free_port(self) -> None:
        """`start` on a port that was free a moment before: another process (any socket bound to port 0, a
        connection's own port) can take it first; then again on another."""
        log = self._root / "log"
        for attempt in itertools.count(1):
            self.port = _free_port()
            seen = log.stat().st_size if log.exists() else 0
            try:
                self.start()
                return
            except subprocess.CalledProcessError:
                with log.open("rb") as lines:
                    lines.seek(seen)
                    taken = b"could not bind" in lines.read()
                if not taken or attempt == 5:
                    raise

    def _run(self, program: str, *arguments: str) -> None:
        subprocess.run(
            [*self._as_postgres, str(self._bin / program), *arguments],
            check=True,
            capture_output=True,
            timeout=120,
            cwd=self._root,
        )

    def start(self) -> None:
        options = (
            # No fsync (the machine does not crash under a test); commits are still written before they are
            # acknowledged, so that a server stopped at once (stop) loses none.
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self._root} -c fsync=off -c full_page_writes=off "
            "-c max_connections=300 -c shared_buffers=32MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self._root / "log"), "-w", "start")

    def stop(self) -> None:
        """Stop at once, as a crash would: connections are cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def new_url(self, *, password: str | None = None) -> str:
        """A URL whose search path is a new, empty schema: a database of the test's own, in effect."""
        schema = f"test_{next(self._schemas)}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {schema}")
        user = "postgres" if password is None else f"postgres:{quote(password, safe='')}"
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres?options=-csearch_path%3D{schema}"

    def new_database(self) -> str:
        """A new database of its own (PgBouncer passes no search path): its name."""
        name = f"database_{next(self._schemas)}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return name

    @contextlib.contextmanager
    def bouncer(self) -> Iterator[int]:
        """PgBouncer in front of the server, in transaction mode, with two server connections per database for all
        its clients (so that consecutive transactions of one client run on different sessions): its port."""
        program = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        folder = Path(tempfile.mkdtemp(prefix="cms-pgbouncer-", dir=self._root))
        port = _free_port()
        (folder / "users.txt").write_text('"postgres" ""\n')
        (folder / "pgbouncer.ini").write_text(
            f"[databases]\n* = host=127.0.0.1 port={self.port}\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {folder / 'users.txt'}\npool_mode = transaction\n"
            "default_pool_size = 2\nmax_client_conn = 100\n"
            f"logfile = {folder / 'log'}\npidfile = {folder / 'pid'}\n"
        )
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            for path in (folder, *folder.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
        process = subprocess.Popen(
            [*self._as_postgres, program, str(folder / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start: {(folder / 'log').read_text(errors='replace')}")
                time.sleep(0.05)
            yield port
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop()
        shutil.rmtree(self._root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
