"""`cms import` and `import_events` through a real `Outbox` to the sandbox: every row recorded once, across Ctrl-C
and kill -9 and a second run; the bar on a terminal, plain lines in a pipe; failed rows, exit statuses, the
example of docs/backfilling.md."""

from __future__ import annotations

import csv
import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import cms_python._backfill.run
from cms_python import Outbox, import_events
from cms_python._backfill import RowProblem
from cms_python._cli import main
from cms_python._cli.progress import problem_line
from cms_python._outbox import StorageError
from cms_python._requests import build_lead
from cms_python.testing import Sandbox

from ..support import ROOT
from ..support.processes import started
from ..support.sandbox import ServedSandbox, served_sandbox
from ..support.waits import wait_until

BACKFILLING_PAGE = (ROOT / "docs" / "backfilling.md").read_text(encoding="utf-8")
HEADER = ["kind", "event_name", "customer_external_id", "click_id", "invoice_id", "amount", "currency", "timestamp"]


def write_orders(path: Path, count: int) -> Path:
    """`count` rows, leads and sales in turn, each with its own customer, click and invoice."""
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        for number in range(count):
            moment = f"2025-11-{1 + number % 28:02}T{number % 24:02}:00:00+01:00"
            if number % 2:
                sale = [f"inv_{number}", str(1000 + number), "USD"]
                writer.writerow(["sale", "purchase_completed", f"user_{number}", f"click_{number}", *sale, moment])
            else:
                writer.writerow(["lead", "signup_started", f"user_{number}", f"click_{number}", "", "", "", moment])
    return path


def assert_each_row_recorded_once(sandbox: Sandbox, rows: int) -> None:
    leads, sales = sandbox.leads, sandbox.sales
    assert len(leads) == (rows + 1) // 2
    assert len({lead.customer_external_id for lead in leads}) == len(leads)
    invoices = [sale.invoice_id for sale in sales]
    assert sorted(invoices) == sorted(f"inv_{number}" for number in range(1, rows, 2))
    # Whatever was sent twice (an answer lost to a kill) went under the same key and was recorded once.
    keys = {request.idempotency_key for request in sandbox.requests if request.status == 200}
    assert len(keys) == rows


@pytest.fixture
def served() -> Iterator[ServedSandbox]:
    with served_sandbox(Sandbox(token="import-token")) as serving:
        yield serving


def environment(url: str) -> dict[str, str]:
    return {**os.environ, "CMS_BEARER_TOKEN": "import-token", "CMS_HOST": url, "PYTHONUNBUFFERED": "1"}


# -- through the Python API, in-process ------------------------------------------------------------------------


@pytest.mark.timeout(600)  # ~25 s of CPU: 99 s on a busy 2-core machine, and past the default 120 s once
def test_ten_thousand_rows_reach_the_sandbox_once_each_and_a_second_run_sends_nothing(tmp_path):
    sandbox = Sandbox()
    path = write_orders(tmp_path / "orders.csv", 10_000)
    with sandbox.client() as client:
        summary = import_events(path, client=client, rate_limit=None)
        assert (summary.state, summary.rows, summary.queued, summary.invalid) == ("done", 10_000, 10_000, 0)
        assert (summary.delivered, summary.failed, summary.pending, summary.duplicates) == (10_000, 0, 0, 0)
        assert_each_row_recorded_once(sandbox, 10_000)

        again = import_events(path, client=client, rate_limit=None)

    assert (again.queued, again.duplicates, again.delivered) == (0, 10_000, 0)
    assert len(sandbox.requests) == 10_000


def test_stopped_while_queueing_then_run_again_queues_the_rest_once(tmp_path, monkeypatch):
    monkeypatch.setattr(cms_python._backfill.run, "PROGRESS_INTERVAL", 0.0)  # a progress call after every batch
    sandbox = Sandbox()
    path = write_orders(tmp_path / "orders.csv", 2_000)
    stop = threading.Event()

    def stop_halfway(summary):
        if summary.state == "queueing" and summary.checked >= 700:
            stop.set()

    with sandbox.client() as client:
        first = import_events(path, client=client, rate_limit=None, on_progress=stop_halfway, stop=stop)
        assert first.state == "interrupted"
        assert 700 <= first.queued < 2_000
        second = import_events(path, client=client, rate_limit=None)

    assert second.state == "done"
    assert second.duplicates == first.queued
    assert second.queued == 2_000 - first.queued
    assert_each_row_recorded_once(sandbox, 2_000)


def test_stopped_while_reading_queues_nothing_and_opens_no_outbox(tmp_path):
    path = write_orders(tmp_path / "orders.csv", 3_000)
    stop = threading.Event()

    def stop_while_reading(summary):
        if summary.state == "reading":
            stop.set()

    with Sandbox().client() as client:
        summary = import_events(path, client=client, rate_limit=None, on_progress=stop_while_reading, stop=stop)
    assert (summary.state, summary.queued, summary.checked) == ("interrupted", 0, 0)
    assert not Path(f"{path}.cms-outbox").exists()


def test_rows_as_mappings_into_an_outbox_of_your_own(tmp_path):
    sandbox = Sandbox()
    rows = [
        {"event_name": "signup", "customer_external_id": "u1", "click_id": "c1"},
        {"event_name": "signup", "customer_external_id": "u2"},  # no click id, no association: refused by the API
        {"event_name": "signup", "customer_external_id": "u3", "click_id": "c3", "customer_email": "nope"},
    ]
    errors = tmp_path / "errors.csv"
    with sandbox.client() as client, Outbox(tmp_path / "queue", client=client, rate_limit=None) as outbox:
        summary = import_events(rows, outbox, kind="lead", errors=errors)
        assert outbox.stats()["failed"] == 1  # left open: the caller's
    assert (summary.queued, summary.invalid, summary.delivered, summary.failed) == (2, 1, 1, 1)
    assert [lead.customer_external_id for lead in sandbox.leads] == ["u1"]
    with errors.open(newline="", encoding="utf-8") as file:
        assert [(row["line"], row["type"]) for row in csv.DictReader(file)] == [
            ("3", "validation_error"),
            ("2", "missing_click_id"),
        ]


def test_an_outbox_batch_stores_all_its_events_or_none(tmp_path):
    lead = {"event_name": "signup", "customer_external_id": "u1", "click_id": "c1", "idempotency_key": "k1"}
    with Sandbox().client() as client, Outbox(tmp_path / "queue", client=client, flush_on_exit=0) as outbox:
        connection = outbox._store.connection
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages + 2}")  # the disk fills up halfway through the batch
        large = [
            build_lead(**{**lead, "idempotency_key": f"k{number}", "customer_name": "\U0001f600" * 255})
            for number in range(50)
        ]
        with pytest.raises(StorageError):
            outbox._enqueue_many(large)
        assert outbox.stats()["pending"] == 0
        connection.execute("PRAGMA max_page_count = 1000000")

        # A duplicate and a reused key inside a batch: answered as outside one.
        queued, again, reused = outbox._enqueue_many(
            [build_lead(**lead), build_lead(**lead), build_lead(**{**lead, "customer_external_id": "u2"})]
        )
        assert (queued["success"], again["data"]["duplicate"]) == (True, True)
        assert reused["type"] == "idempotency_key_reused"
        stats = outbox.stats()
        assert stats["pending"] + stats["delivered"] == 1


# -- the command, in-process against a served sandbox ----------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> SimpleNamespace:
    try:
        status = main(["import", *args])
    except SystemExit as exit_info:
        status = exit_info.code
    out, err = capsys.readouterr()
    return SimpleNamespace(status=status, out=out, err=err)


def test_rows_the_api_refuses_exit_1_and_go_to_the_errors_file_with_their_line(served, tmp_path, capsys):
    path = tmp_path / "leads.csv"
    path.write_text(
        "event_name,customer_external_id,click_id\n"
        "signup,u1,c1\n"
        "signup,u2,\n"  # line 3: no click id and no deferred association: 400 missing_click_id
        "signup,u3,c3\n"
        ",u4,c4\n",  # line 5: invalid, skipped
        encoding="utf-8",
    )
    errors = tmp_path / "errors.csv"
    args = [str(path), "--kind", "lead", "--rate-limit", "0", "--token", "import-token", "--host", served.url]

    result = run_cli(capsys, *args, "--errors", str(errors))

    assert result.status == 1
    assert "4 rows: 3 queued, 0 already queued by an earlier run (or repeated), 1 invalid (skipped)." in result.out
    assert "2 delivered, 1 failed, 0 pending." in result.out
    assert f"cms outbox {path}.cms-outbox --failed" in result.out
    assert "  line 5: event_name: is required" in result.out
    with errors.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [(row["line"], row["type"]) for row in rows] == [("5", "validation_error"), ("3", "missing_click_id")]
    assert "has no deferred association" in rows[1]["error"]
    assert [lead.customer_external_id for lead in served.sandbox.leads] == ["u1", "u3"]


def test_a_problem_line_escapes_what_a_terminal_could_act_on():
    problem = RowProblem(2, "bad\u202etype", "\x9b31m red \u2028 line \x1b[2J clear \x07 bell")
    assert problem_line(problem) == "  line 2: bad\\u202etype: \\x9b31m red \\u2028 line \\x1b[2J clear \\x07 bell"


def test_every_valid_row_delivered_exits_0(served, tmp_path, capsys):
    path = write_orders(tmp_path / "orders.csv", 6)
    result = run_cli(capsys, str(path), "--rate-limit", "0", "--token", "import-token", "--host", served.url)
    assert (result.status, result.err) == (0, "")
    assert "6 rows: 6 queued, 0 already queued by an earlier run (or repeated), 0 invalid (skipped)." in result.out
    assert_each_row_recorded_once(served.sandbox, 6)


def test_a_refused_token_stops_the_import_with_what_to_do(served, tmp_path, capsys):
    path = write_orders(tmp_path / "orders.csv", 4)
    result = run_cli(capsys, str(path), "--rate-limit", "0", "--token", "wrong-token", "--host", served.url)
    assert result.status == 1
    assert "Stopped: the API refused the token (401/403)" in result.out
    assert "run the same command again to resume" in result.out
    assert served.sandbox.leads == []


def test_an_outbox_file_that_is_not_one_is_a_usage_error(served, tmp_path, capsys):
    path = write_orders(tmp_path / "orders.csv", 2)
    Path(f"{path}.cms-outbox").write_bytes(b"not an outbox, and someone's data")
    result = run_cli(capsys, str(path), "--rate-limit", "0", "--token", "import-token", "--host", served.url)
    assert result.status == 2
    assert f"{path}.cms-outbox" in result.err
    assert served.sandbox.requests == []


def test_standard_input_into_the_given_outbox(served, tmp_path, capsys, monkeypatch):
    source = write_orders(tmp_path / "orders.csv", 4).read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(source)))
    outbox = tmp_path / "stdin.cms-outbox"
    result = run_cli(
        capsys, "-", "--format", "csv", "--outbox", str(outbox), "--rate-limit", "0", "--host", served.url,
        "--token", "import-token",
    )  # fmt: skip
    assert result.status == 0
    assert outbox.exists()
    assert_each_row_recorded_once(served.sandbox, 4)


# -- real processes: signals, a terminal, a pipe ---------------------------------------------------------------


def command(path: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "cms_python", "import", str(path), *options]


@pytest.mark.parametrize(
    ("kill", "background"),
    [
        pytest.param(signal.SIGINT, False, id="ctrl-c"),
        pytest.param(signal.SIGINT, True, id="SIGINT-to-a-background-job"),
        pytest.param(signal.SIGTERM, True, id="SIGTERM-to-a-background-job"),
        pytest.param(signal.SIGKILL, False, id="kill-9"),
    ],
)
def test_interrupted_then_the_same_command_again_records_each_row_once(served, tmp_path, kill, background):
    rows = 120
    path = write_orders(tmp_path / "orders.csv", rows)
    same_command = command(path, "--rate-limit", "2400")  # 40 a second: the first run is stopped halfway

    options = {"env": environment(served.url), "stdout": subprocess.PIPE}
    with started(same_command, background=background, **options) as first:
        wait_until(lambda: len(served.sandbox.requests) >= 20)
        first.send_signal(kill)
        out, _ = first.communicate(timeout=60)
    sent_before = len(served.sandbox.requests)
    assert sent_before < rows
    if kill != signal.SIGKILL:
        assert first.returncode == 130
        assert "Interrupted." in out
        assert "To resume, run the same command again: rows already queued are not queued twice." in out
    else:
        assert first.returncode == -signal.SIGKILL

    second = subprocess.run(
        same_command, env=environment(served.url), capture_output=True, text=True, timeout=120, check=False
    )

    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{rows} rows: 0 queued, {rows} already queued by an earlier run" in second.stdout
    assert_each_row_recorded_once(served.sandbox, rows)


def run_in_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal (100 columns) as its standard output and error; its status, its output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    output = b""
    try:
        with started(argv, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, env=env) as process:
            os.close(follower)
            follower = -1
            while True:
                ready, _, _ = select.select([leader], [], [], 60)
                if not ready:
                    raise AssertionError("no output for 60 s")
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the terminal's other end closed
                    break
                if not chunk:
                    break
                output += chunk
            status = process.wait(timeout=30)
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    return status, output.decode()


def test_a_terminal_shows_the_bar(served, tmp_path):
    path = write_orders(tmp_path / "orders.csv", 30)
    status, output = run_in_terminal(command(path, "--rate-limit", "1200"), environment(served.url))
    assert status == 0, output
    frames = output.split("\r")
    bars = [frame for frame in frames if re.search(r"delivering: +\d+%\|[█▏▎▍▌▋▊▉ ]+\| \d+/30 delivered", frame)]
    assert bars, output
    assert "ETA 0:00:" in bars[-1]
    assert "/min" in bars[-1]
    assert "30 rows: 30 queued" in output


def test_a_terminal_without_tqdm_gets_plain_lines(served, tmp_path):
    path = write_orders(tmp_path / "orders.csv", 4)
    hide_tqdm = "import sys; sys.modules['tqdm'] = None; from cms_python._cli import main; sys.exit(main())"
    argv = [sys.executable, "-c", hide_tqdm, "import", str(path), "--rate-limit", "0"]
    status, output = run_in_terminal(argv, environment(served.url))
    assert status == 0, output
    assert "%|" not in output
    assert re.search(r"\[\d\d:\d\d:\d\d\] .*orders\.csv: done: ETA 0:00:00 ", output)


def test_a_pipe_gets_a_plain_line_per_step(served, tmp_path):
    path = write_orders(tmp_path / "orders.csv", 10)
    run = subprocess.run(
        command(path, "--rate-limit", "1200"), env=environment(served.url), capture_output=True, text=True, check=False
    )
    assert run.returncode == 0
    assert "\r" not in run.stdout
    assert "%|" not in run.stdout
    steps = re.findall(r"^\[\d\d:\d\d:\d\d\] \S*orders\.csv: (\w+): ", run.stdout, flags=re.MULTILINE)
    assert steps[0] == "reading"
    assert {"queueing", "delivering"} <= set(steps)
    assert steps[-1] == "done"


def test_the_docs_example_runs_as_written_against_the_sandbox(tmp_path):
    (block,) = re.findall(r"# Backfilling past events\n.*?```bash\n(.*?)```", BACKFILLING_PAGE, flags=re.DOTALL)
    sandbox = Sandbox()
    with sandbox.serve() as url:
        script = block.replace("http://127.0.0.1:8787", url)
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        run = subprocess.run(
            ["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Checked 3 of 3 rows: 0 invalid." in run.stdout
    assert "3 rows: 3 queued, 0 already queued" in run.stdout
    assert "3 rows: 0 queued, 3 already queued" in run.stdout
    assert (len(sandbox.leads), len(sandbox.sales)) == (1, 2)


@pytest.mark.parametrize("mode", ["send", "strict", "dry_run"])
def test_the_input_is_read_twice_at_most_and_the_outbox_is_not_polled(tmp_path, monkeypatch, mode):
    # Rows that fail when delivered too: their lines go to the errors file without reading the input again.
    path = tmp_path / "rows.csv"
    lines = ["event_name,customer_external_id,click_id"] + [f"signup,u{number},c{number}" for number in range(600)]
    lines.append("signup,no-click,")  # refused by the API (no click id, no association)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    reads, stats = [], []
    real_rows = cms_python._backfill.run._Input.rows
    monkeypatch.setattr(cms_python._backfill.run._Input, "rows", lambda self: reads.append(1) or real_rows(self))
    monkeypatch.setattr(cms_python._backfill.run, "PROGRESS_INTERVAL", 0.0)  # a progress call at every step
    sandbox = Sandbox()
    with sandbox.client() as client, Outbox(tmp_path / "queue", client=client, rate_limit=None) as outbox:
        real_stats = outbox.stats
        monkeypatch.setattr(outbox, "stats", lambda: stats.append(1) or real_stats())
        summary = import_events(
            path,
            outbox,
            kind="lead",
            errors=tmp_path / "errors.csv",
            strict=mode == "strict",
            dry_run=mode == "dry_run",
        )
    assert len(reads) <= 2
    assert len(stats) <= 2  # at the start and at the end, whatever the progress calls
    if mode != "dry_run":
        assert (summary.delivered, summary.failed) == (600, 1)
        errors = (tmp_path / "errors.csv").read_text(encoding="utf-8").splitlines()
        assert [row.split(",")[:2] for row in errors[1:]] == [["602", "missing_click_id"]]
