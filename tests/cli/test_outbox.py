"""`cms outbox`: counts, failed events, retry, purge, and delivery in the foreground."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cms_python import Outbox
from cms_python._cli import main
from cms_python._outbox.sqlite import SQLiteStore
from cms_python.testing import Sandbox

from ..conftest import LEAD, SALE, TOKEN
from ..outbox.conftest import new_event
from ..support.processes import started
from ..support.servers import LoopbackServer, Reply
from ..support.waits import wait_until


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox()


@pytest.fixture
def url(sandbox: Sandbox) -> Iterator[str]:
    with sandbox.serve() as served:
        yield served


@pytest.fixture
def path(tmp_path: Path, sandbox: Sandbox) -> Path:
    """An outbox file holding one failed sale (refused with a 422), one delivered lead and two pending leads."""
    file = tmp_path / "outbox.sqlite3"
    with sandbox.client() as client, Outbox(file, client=client, rate_limit=None) as outbox:
        sandbox.fail_next(422)
        outbox.track_sale(**SALE, idempotency_key="sale-1")
        outbox.track_lead(**LEAD)
        assert outbox.flush(timeout=10)
    with Outbox(file, TOKEN, "http://127.0.0.1:9") as down:  # nothing listens: these stay pending
        down.track_lead(**{**LEAD, "customer_external_id": "a"})
        down.track_lead(**{**LEAD, "customer_external_id": "b"})
        down.close(timeout=0)
    return file


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["outbox", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_counts(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, str(path)) == (0, '{"pending": 2, "failed": 1, "delivered": 1}\n', "")


def test_the_path_can_come_from_the_environment(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CMS_OUTBOX_PATH", str(path))
    assert json.loads(run(capsys)[1])["pending"] == 2


def test_failed_events_are_json_lines(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, str(path), "--failed")
    (line,) = out.splitlines()
    event = json.loads(line)
    assert status == 0
    assert (event["kind"], event["idempotency_key"]) == ("sale", "sale-1")
    assert event["arguments"]["invoice_id"] == "inv_987"
    assert event["arguments"]["timestamp"].endswith("+00:00")
    assert (event["result"]["status_code"], event["result"]["type"]) == (422, "sandbox_fault")


def test_retry_failed_queues_them_again(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, str(path), "--retry-failed")
    assert (status, out.split()[0]) == (0, "1")
    assert json.loads(run(capsys, str(path))[1]) == {"delivered": 1, "failed": 0, "pending": 3}


def test_purge_failed_asks_first(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # not a terminal: no question, nothing deleted
    status, _, err = run(capsys, str(path), "--purge-failed")
    assert (status, "--yes" in err) == (1, True)
    assert json.loads(run(capsys, str(path))[1])["failed"] == 1
    assert run(capsys, str(path), "--purge-failed", "--yes")[:2] == (0, "1 failed event(s) deleted\n")
    assert json.loads(run(capsys, str(path))[1])["failed"] == 0


def test_a_missing_file_is_not_created_nor_an_empty_one_set_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing.sqlite3"
    status, _, err = run(capsys, str(missing))
    assert (status, "no outbox at" in err) == (1, True)
    assert not missing.exists()
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    assert run(capsys, str(empty), "--retry-failed")[0] == 1
    assert empty.read_bytes() == b""


def test_a_file_that_is_not_an_outbox_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello\n" * 200)
    status, _, err = run(capsys, str(other))
    assert (status, "not a readable CutMeShort outbox" in err) == (1, True)


@pytest.mark.parametrize(
    "argv",
    [[], ["a", "b"], ["deliver", "x", "--failed"], ["x", "--until-empty"], ["x", "--failed", "--retry-failed"]],
)
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["outbox", *argv])
    assert raised.value.code == 2


def test_deliver_until_empty_with_progress(
    path: Path, url: str, sandbox: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    status, _, err = run(capsys, "deliver", str(path), "--until-empty", "--host", url, "--token", TOKEN)
    assert status == 0
    assert "delivered 2" in err
    assert "pending 0" in err
    assert [lead.customer_external_id for lead in sandbox.leads][-2:] == ["a", "b"]


def test_deliver_stops_when_the_token_is_refused(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CMS_BEARER_TOKEN", TOKEN)
    with Sandbox(token="another-token").serve() as url:
        monkeypatch.setenv("CMS_HOST", url)
        status, _, err = run(capsys, "deliver", str(path), "--until-empty")
    assert (status, "paused" in err) == (1, True)
    assert json.loads(run(capsys, str(path))[1])["pending"] == 2


@pytest.mark.parametrize("background", [False, True], ids=["terminal", "background-job"])
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_deliver_runs_until_stopped(path: Path, url: str, sandbox: Sandbox, stop: int, background: bool) -> None:
    argv = [sys.executable, "-m", "cms_python", "outbox", "deliver", str(path), "--host", url, "--token", TOKEN]
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with started([*argv, "--rate-limit", "0"], background=background, **options) as process:
        wait_until(lambda: len(sandbox.leads) == 3)  # the two pending leads delivered: it is running, and waits
        process.send_signal(stop)
        out, err = process.communicate(timeout=30)
    assert (process.returncode, out, err) == (0, "", "")
    store = SQLiteStore(str(path))
    assert store.counts() == {"pending": 0, "failed": 1, "delivered": 3}
    store.close()


def test_failed_events_print_strict_json_whatever_the_server_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "outbox.sqlite3"
    store = SQLiteStore(str(file))
    store.enqueue(
        new_event("key-1", "u", {"eventName": "e", "customerExternalId": "u", "clickId": "c"}), now=1.0, max_pending=10
    )
    (event,) = store.claim("me", 2.0, 1, None).events
    result = {"success": False, "error": "bad \ud800", "status_code": 400, "type": "x", "details": {"n": float("nan")}}
    store.failed(event, result, attempted=True, now=0.0)
    store.close()

    def refuse(name: str) -> None:
        raise ValueError(name)

    (line,) = run(capsys, str(file), "--failed")[1].splitlines()
    assert line.isascii()
    printed = json.loads(line, parse_constant=refuse)
    assert printed["result"]["error"] == "bad \ud800"
    assert printed["result"]["details"] == {"n": None}


def test_failed_events_print_what_the_server_said_escaped_for_a_terminal(
    tmp_path: Path, server: LoopbackServer, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # A C1 control sequence introducer (red text), a bidirectional override, a line separator, a clear-screen
    # sequence, a bell, a delete, an invisible tag character: a terminal would act on each of them.
    hostile = "\x9b31m red \u202e evil \u2028 line \x1b[2J clear \x07 bell \x7f del \U000e0001 tag"
    kind = "bad\x9b31m\u202e\u2028\x1b[2J\x07"
    body = {"success": False, "error": hostile, "type": kind, "details": {"field": hostile}}
    server.default = Reply(status=422, body=body)
    file = tmp_path / "outbox.sqlite3"
    with Outbox(file, TOKEN, server.url, rate_limit=None) as outbox:
        outbox.track_lead(**{**LEAD, "customer_external_id": "Zoë 日本"})
        assert outbox.flush(timeout=30)

    status, out, _ = run(capsys, str(file), "--failed")

    raw = {character for character in hostile + kind if not character.isprintable()}
    assert status == 0
    assert not raw & set(out)
    assert caplog.records  # the outbox's warnings, which name the type, escape it too
    assert not raw & set("".join(record.getMessage() for record in caplog.records))
    (line,) = out.splitlines()
    event = json.loads(line)
    assert (event["result"]["error"], event["result"]["type"]) == (hostile, kind)
    assert event["result"]["details"] == {"field": hostile}
    assert event["arguments"]["customer_external_id"] == "Zoë 日本"
    assert "Zoë 日本" in line  # printable text in any script stays as it is
