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
        self.port = _free_port()
        self._schemas = itertools.count(1)
        self._run("initdb", "-D", str(self.data), "--auth=trust", "--no-sync", "-U", "postgres", "-E", "UTF8")
        self.start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

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

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop()
        shutil.rmtree(self._root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
