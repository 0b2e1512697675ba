"""What a hostile test of `cms import`'s hardening broke (issue 17): --errors against standard input's file and a
symlinked outbox's log, an amount of thousands of digits, a signal while standard input is copied."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cms_python import Outbox, import_events

from ..conftest import LEAD, TOKEN
from ..support import ROOT
from ..support.processes import started

posix_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX processes and signals")


CSV = "click_id,event_name,customer_external_id\nc,e,u1\n,e,\n"  # line 3 is invalid
CMS_IMPORT_STDIN = [sys.executable, "-m", "cms_python", "import", "-", "--format", "csv", "--kind", "lead"]


def test_errors_file_is_not_the_file_standard_input_comes_from(tmp_path: Path) -> None:
    # `cms import - ... < orders.csv --errors orders.csv`: the input was copied from standard input, so the check
    # against the input's path looked at the copy; the user's file became "line,type,error".
    orders = tmp_path / "orders.csv"
    orders.write_text(CSV)
    with orders.open() as stdin:
        process = subprocess.run(
            [*CMS_IMPORT_STDIN, "--dry-run", "--errors", str(orders)],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
    assert orders.read_text() == CSV
    assert process.returncode == 2, process.stdout
    assert "is the input file" in process.stderr


def test_errors_file_is_not_the_log_of_an_outbox_opened_through_a_symlink(tmp_path: Path) -> None:
    # SQLite keeps the -wal and -shm of a database opened through a symbolic link beside the link's target: the
    # check protected `link-wal` (nothing) and let the errors file replace the live log (the event was gone).
    (tmp_path / "real").mkdir()
    link = tmp_path / "outbox.sqlite3"
    link.symlink_to(tmp_path / "real" / "outbox.sqlite3")
    orders = tmp_path / "orders.csv"
    orders.write_text(CSV)
    with Outbox(link, TOKEN, "http://127.0.0.1:9", rate_limit=None, flush_on_exit=0) as outbox:
        assert outbox.track_lead(**LEAD, idempotency_key="acknowledged")["success"]
        for suffix in ("-wal", "-shm"):
            log = tmp_path / "real" / f"outbox.sqlite3{suffix}"
            assert log.exists()
            with pytest.raises(ValueError, match="is the outbox"):
                import_events(orders, outbox, kind="lead", dry_run=True, errors=log)
        outbox.close(timeout=0)
    with Outbox(link, TOKEN, "http://127.0.0.1:9", flush_on_exit=0) as later:
        assert later.stats()["pending"] == 1
        later.close(timeout=0)


def test_an_amount_of_thousands_of_digits_is_an_invalid_row_not_a_crash(tmp_path: Path) -> None:
    # int() refuses more than 4,300 digits (sys.get_int_max_str_digits) with a ValueError, which escaped
    # import_events: `cms import: Exceeds the limit (4300 digits) ...`, exit 2, no line, nothing checked after it.
    orders = tmp_path / "orders.csv"
    header = "click_id,event_name,customer_external_id,invoice_id,amount,currency\n"
    orders.write_text(header + f"c,e,u,i1,{'9' * 5000},USD\nc,e,u,i2,100,USD\n")
    summary = import_events(orders, kind="sale", dry_run=True)
    assert (summary.checked, summary.invalid) == (2, 1)
    (problem,) = summary.problems
    assert problem.line == 2
    assert problem.error.startswith("amount: must be a whole number of cents")
    assert len(problem.error) < 200


@posix_only
@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGINT]])
def test_cms_import_reading_standard_input_stops_on_a_signal_as_a_background_job(
    tmp_path: Path, signals: list[signal.Signals]
) -> None:
    # `psql ... | cms import - ... &`: standard input is copied before the rows are read, and the signal handlers
    # came after the copy: SIGINT, ignored in a background job, did not stop it while the copy waited for input.
    argv = [*CMS_IMPORT_STDIN, "--dry-run"]
    options = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "cwd": ROOT}
    with started(argv, background=True, env={**os.environ, "TMPDIR": str(tmp_path)}, **options) as process:
        assert process.stdin is not None
        process.stdin.write("click_id,event_name,customer_external_id\n")
        process.stdin.flush()
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("cms-import-*/stdin")):  # copying standard input
            assert process.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for number in signals:
            process.send_signal(number)
            time.sleep(0.2)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"cms import - went on reading standard input after {signals}")
        assert process.returncode in (130, -signal.SIGTERM)
