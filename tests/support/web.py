"""What the web-framework tests share: hostile click ids, the sandbox served over HTTP for an Outbox, and the
examples' servers run as processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from . import ROOT

EXAMPLES = ROOT / "examples"
# Generous: only a broken example waits this long, and two cores are shared by everything running.
PATIENCE = 60.0

#: The Set-Cookie a plain-http visit to `/?cms_rf=abc` gets.
ABC_COOKIE = "cms_rf=abc; Max-Age=7776000; Path=/; SameSite=Lax"

#: `cms_rf` query values (percent-encoded as in a URL) that must be ignored: no click id, no cookie, no 500.
HOSTILE_QUERY_VALUES = {
    "CR/LF": "a%0D%0ASet-Cookie:%20evil=1",
    "NUL": "a%00b",
    "10 KB": "x" * 10_240,
    "non-ASCII": "%C3%A9t%C3%A9",
    "cookie attributes": "a%3BDomain%3Devil.example",
    "space": "a+b",
    "empty": "",
    "256 characters": "x" * 256,
}


def example_command(example: str, port: int) -> list[str]:
    """How an example's README starts it ("django", "flask" or "fastapi"), on 127.0.0.1:`port` (with PORT set)."""
    if example == "django":
        return [
            sys.executable,
            str(EXAMPLES / "django_app" / "manage.py"),
            "runserver",
            "--noreload",
            f"127.0.0.1:{port}",
        ]
    return [sys.executable, str(EXAMPLES / f"{example}_app.py")]


class Running:
    """An example's server process, `command(port)` on a free port of 127.0.0.1; its output, as it comes, in
    `lines`."""

    def __init__(self, command: Callable[[int], list[str]], env: dict[str, str], cwd: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            command(self.port),
            env={**env, "PORT": str(self.port), "PYTHONUNBUFFERED": "1"},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Ctrl-C must reach it even when pytest runs as a background job, whose children inherit SIGINT
            # ignored (`nohup python -m pytest &`). Only a signal reset between fork and exec: no lock to wait on.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for_output(self, text: str) -> None:
        with self._changed:
            found = self._changed.wait_for(lambda: any(text in line for line in self.lines), timeout=PATIENCE)
        assert found, f"{text!r} not in the output:\n" + "\n".join(self.lines)

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the example exited:\n" + "\n".join(self.lines)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        pytest.fail("the example did not start serving:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            self.process.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join()
        assert self.process.stdout is not None
        self.process.stdout.close()
