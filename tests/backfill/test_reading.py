"""`cms import` and `import_events` before anything is sent: reading CSV and JSON Lines, line numbers, the checks
every row goes through, malformed files (exit 2), --dry-run, --strict, --errors, idempotency keys from content."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

import cms_python._backfill.run
from cms_python import MalformedInputError, Outbox, import_events
from cms_python._backfill.rows import read_file
from cms_python._backfill.values import row_key
from cms_python._cli import main
from cms_python.testing import Sandbox

HEADER = "kind,event_name,customer_external_id,click_id,invoice_id,amount,currency,timestamp\n"
GOOD_LEAD = "lead,signup_started,user_1,click_1,,,,2024-05-01T12:00:00Z\n"
GOOD_SALE = "sale,purchase_completed,user_1,click_1,inv_1,4999,USD,2024-05-01T14:00:00+02:00\n"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> SimpleNamespace:
    try:
        status = main(["import", *args])
    except SystemExit as exit_info:  # argparse's usage errors
        status = exit_info.code
    out, err = capsys.readouterr()
    return SimpleNamespace(status=status, out=out, err=err)


# -- what a file may look like ----------------------------------------------------------------------------------


def test_bom_crlf_quoted_commas_and_line_breaks_are_read_with_editor_line_numbers(tmp_path, capsys):
    content = (
        "\ufeff"
        + HEADER
        + 'lead,signup_started,"user,1",click_1,,,,\n'  # line 2: a quoted comma is part of the value
        + 'lead,signup_started,user_2,click_2,,,,"2024-05-01\n12:00"\n'  # lines 3-4: one record, a bad timestamp
        + "sale,purchase_completed,user_3,click_3,inv_3,49.99,USD,\n"  # line 5: not cents
        + GOOD_SALE  # line 6
    ).replace("\n", "\r\n")
    path = write(tmp_path, "orders.csv", content)

    result = run(capsys, str(path), "--dry-run")

    assert result.status == 1
    assert "Checked 4 of 4 rows: 2 invalid." in result.out
    assert "  line 3: timestamp: must be an ISO 8601 date-time" in result.out
    assert "  line 5: amount: must be a whole number of cents (4999 for 49.99), got '49.99'" in result.out
    assert "line 2" not in result.out
    assert "line 6" not in result.out
    assert "Nothing was sent (--dry-run)." in result.out


def test_camel_case_columns_are_the_api_fields(tmp_path, capsys):
    path = write(
        tmp_path,
        "sales.csv",
        "eventName,customerExternalId,clickId,invoiceId,amount,currency,customerEmail\n"
        "purchase_completed,user_1,click_1,inv_1,4999,usd,jane@example.com\n",
    )
    result = run(capsys, str(path), "--kind", "sale", "--dry-run")
    assert (result.status, result.err) == (0, "")
    assert "Checked 1 of 1 rows: 0 invalid." in result.out
    assert "At 60 requests a minute, sending 1 row takes 1 s." in result.out


def test_every_row_goes_through_the_sdk_checks(tmp_path):
    path = write(
        tmp_path,
        "mixed.csv",
        "kind,event_name,customer_external_id,click_id,invoice_id,amount,currency,customer_email,mode,timestamp\n"
        "sale,purchase,user_1,c,inv_1,4999,US Dollars,,,\n"  # 2: currency
        "lead,signup,user_1,c,,,,not-an-email,,\n"  # 3: email
        "lead,signup,user_1,,,,,,deferred,\n"  # 4: deferred needs a click id
        "lead,signup,user_1,c,inv_1,,,,,\n"  # 5: a lead has no invoice
        "sale,purchase,user_1,c,,4999,USD,,,\n"  # 6: a sale needs its invoice
        "refund,purchase,user_1,c,inv_2,4999,USD,,,\n"  # 7: no such kind
        ",signup,user_1,c,,,,,,\n"  # 8: no kind at all
        "sale,purchase,user_1,c,inv_3,-5,USD,,,2024-05-01T12:00:00\n",  # 9: negative, and no UTC offset
    )
    summary = import_events(path, dry_run=True)
    assert (summary.state, summary.rows, summary.checked, summary.invalid) == ("done", 8, 8, 8)
    errors = {problem.line: problem.error for problem in summary.problems}
    assert errors[2] == 'currency: must be a 3-letter ISO 4217 code such as "USD"'
    assert errors[3] == "customer_email: must be an email address like jane@example.com"
    assert errors[4].startswith('mode: mode="deferred" needs the click_id')
    assert errors[5] == "invoice_id: is not a field of a lead"
    assert errors[6] == "invoice_id: is required"
    assert errors[7] == 'kind: must be "lead" or "sale", got \'refund\''
    assert errors[8].startswith("kind: is required")
    assert errors[9] == (
        "amount: must be between 0 and 9007199254740991 cents; "
        "timestamp: has no UTC offset: add one, e.g. 2024-05-01T12:00:00Z or 2024-05-01T12:00:00+02:00"
    )
    assert {problem.type for problem in summary.problems} == {"validation_error"}


def test_json_lines_rows_are_typed_and_numbered_by_line(tmp_path):
    path = write(
        tmp_path,
        "events.jsonl",
        '{"kind": "lead", "eventName": "signup", "customerExternalId": "u1", "clickId": "c", "mode": null}\n'
        "\n"  # a blank line is skipped, and still counted
        '{"kind": "sale", "event_name": "buy", "customer_external_id": "u1", "click_id": "c", '
        '"invoice_id": "i1", "amount": "4999", "currency": "USD"}\n'
        '{"kind": "sale", "event_name": "buy", "customer_external_id": "u1", "click_id": "c", '
        '"invoice_id": "i2", "amount": 4999, "currency": "USD", "timestamp": "2024-05-01T12:00:00+02:00"}\n',
    )
    summary = import_events(path, dry_run=True)
    assert (summary.rows, summary.invalid) == (3, 1)
    # JSON says what a value is: a string amount is refused, as track_sale refuses it.
    assert summary.problems[0].line == 3
    assert summary.problems[0].error == "amount: must be an int number of cents, got str"


def test_json_lines_with_a_bom_and_crlf(tmp_path):
    line = '{"event_name": "signup", "customer_external_id": "u1", "click_id": "c"}\r\n'
    path = write(tmp_path, "events.jsonl", "\ufeff" + line * 2)
    summary = import_events(path, kind="lead", dry_run=True)
    assert (summary.rows, summary.invalid) == (2, 0)


def test_standard_input_with_format(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((HEADER + GOOD_LEAD + GOOD_SALE).encode())))
    result = run(capsys, "-", "--format", "csv", "--dry-run")
    assert result.status == 0
    assert "Checked 2 of 2 rows: 0 invalid." in result.out


def test_standard_input_needs_a_format_and_an_outbox(capsys):
    assert run(capsys, "-", "--dry-run").status == 2
    result = run(capsys, "-", "--format", "csv", "--token", "t")
    assert result.status == 2
    assert "needs --outbox PATH" in result.err


# -- malformed files: a usage error with the line, exit 2, nothing sent -----------------------------------------

MALFORMED = {
    "unknown column": (
        "orders.csv",
        "event_name,customer_external_id,click_id,colour\nsignup,u1,c,red\n",
        "line 1: unknown column 'colour'",
    ),
    "missing column": ("orders.csv", "event_name,click_id\nsignup,c\n", "line 1: no customer_external_id column"),
    "same field twice": (
        "orders.csv",
        "event_name,eventName,customer_external_id\na,b,c\n",
        "line 1: two columns are the field event_name",
    ),
    "a sale column for leads": (
        "orders.csv",
        "event_name,customer_external_id,amount\nsignup,u1,5\n",
        "line 1: column 'amount' is not a field of a lead",
    ),
    "ragged row": (
        "orders.csv",
        "event_name,customer_external_id,click_id\nsignup,u1,c\nsignup,u2,c,extra\n",
        "line 3: has 4 fields, the header has 3",
    ),
    "not UTF-8": (
        "orders.csv",
        "event_name,customer_external_id,click_id,customer_name\nsignup,u1,c,Ana\nsignup,u2,c,Jos\xe9\n".encode(
            "latin-1"
        ),
        "line 3: is not UTF-8 text (byte 0xe9 at byte 16): save it as UTF-8",
    ),
    "empty file": ("orders.csv", "", "line 1: the file is empty"),
    "bad quoting": (
        "orders.csv",
        'event_name,customer_external_id,click_id\nsignup,u1,c\nsignup,"u"2,c\n',
        "line 3: is not valid CSV",
    ),
    "JSON array": (
        "events.jsonl",
        '[\n  {"event_name": "signup", "customer_external_id": "u1", "click_id": "c"}\n]\n',
        "line 1: the file is a JSON array: JSON Lines has one object per line",
    ),
    "JSON array on one line": (
        "events.jsonl",
        '[{"event_name": "signup", "customer_external_id": "u1", "click_id": "c"}]\n',
        "line 1: the file is a JSON array",
    ),
    "a JSON line that is not an object": (
        "events.jsonl",
        '{"event_name": "signup", "customer_external_id": "u1", "click_id": "c"}\n"signup"\n',
        "line 2: is a JSON string, not an object",
    ),
    "not JSON": ("events.jsonl", '{"event_name": "signup",\n', "line 1: is not valid JSON"),
    "unknown JSON key": (
        "events.jsonl",
        '{"event_name": "signup", "customer_external_id": "u1"}\n{"event_name": "signup", "colour": "red"}\n',
        "line 2: unknown field 'colour'",
    ),
    "empty JSON Lines": ("events.jsonl", "\n\n", "line 1: the file is empty"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
@pytest.mark.parametrize("mode", ["--dry-run", "--strict", "send"])
def test_a_malformed_file_is_a_usage_error_with_its_line(tmp_path, capsys, case, mode):
    name, content, message = MALFORMED[case]
    path = write(tmp_path, name, content)
    options = ["--kind", "lead"] + ([mode] if mode != "send" else []) + ["--token", "t", "--host", "http://127.0.0.1:9"]
    result = run(capsys, str(path), *options)
    assert result.status == 2
    assert f"cms import: {path}, {message}" in result.err
    # Found before anything was queued: no outbox was even created.
    assert not Path(f"{path}.cms-outbox").exists()


def test_no_kind_anywhere_is_a_usage_error(tmp_path, capsys):
    path = write(tmp_path, "orders.csv", "event_name,customer_external_id\nsignup,u1\n")
    result = run(capsys, str(path), "--dry-run")
    assert result.status == 2
    assert "line 1: no kind column and no kind given: pass --kind lead|sale or add a kind column" in result.err


def test_a_file_whose_format_cannot_be_told_needs_format(tmp_path, capsys):
    path = write(tmp_path, "orders.txt", HEADER + GOOD_LEAD)
    assert run(capsys, str(path), "--dry-run").status == 2
    assert run(capsys, str(path), "--dry-run", "--format", "csv").status == 0


def test_a_missing_file_is_a_usage_error(tmp_path, capsys):
    result = run(capsys, str(tmp_path / "nope.csv"), "--dry-run")
    assert (result.status, "no such file" in result.err) == (2, True)


def test_an_errors_file_that_cannot_be_written_is_a_usage_error(tmp_path, capsys):
    path = write(tmp_path, "orders.csv", HEADER + GOOD_LEAD)
    result = run(capsys, str(path), "--dry-run", "--errors", str(tmp_path / "no-such-folder" / "errors.csv"))
    assert result.status == 2
    assert "cms import: [Errno 2] No such file or directory" in result.err


def test_sending_needs_a_token_and_checks_it_before_reading(tmp_path, capsys):
    path = write(tmp_path, "orders.csv", HEADER + GOOD_LEAD)
    result = run(capsys, str(path))
    assert result.status == 2
    assert "no API token" in result.err
    assert not Path(f"{path}.cms-outbox").exists()


def deeply_nested(depth: int) -> str:
    """A JSON object `depth` objects deep: {"a":{"a":...}}."""
    return '{"a":' * depth + "1" + "}" * depth


NESTED = {
    "brackets": (1, "[" * 100_000),
    "objects": (2, deeply_nested(100_000)),
    "a field value": (2, '{"event_name": ' + "[" * 5_000 + "]" * 5_000 + ', "customer_external_id": "u2"}'),
}


@pytest.mark.parametrize("case", NESTED, ids=list(NESTED))
def test_a_deeply_nested_json_line_is_a_malformed_file_not_a_crash(tmp_path, case):
    line, text = NESTED[case]
    first = '{"event_name": "signup", "customer_external_id": "u1"}\n' if line == 2 else ""
    path = write(tmp_path, "events.jsonl", first + text + "\n")

    with pytest.raises(MalformedInputError) as error:
        import_events(path, kind="lead", dry_run=True)
    assert error.value.line == line
    assert "nested too deeply" in str(error.value)

    run_ = subprocess.run(
        [sys.executable, "-m", "cms_python", "import", str(path), "--kind", "lead", "--dry-run"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run_.returncode == 2, run_.stderr
    assert f"cms import: {path}, line {line}: is nested too deeply" in run_.stderr
    assert "Traceback" not in run_.stderr


# -- reporting ---------------------------------------------------------------------------------------------------


def test_at_most_50_bad_rows_are_printed_then_a_count_and_errors_lists_them_all(tmp_path, capsys):
    bad = "lead,signup,user,c,,,,yesterday\n"
    path = write(tmp_path, "orders.csv", HEADER + GOOD_LEAD + bad * 60)
    errors = tmp_path / "errors.csv"

    result = run(capsys, str(path), "--dry-run", "--errors", str(errors))

    assert result.status == 1
    printed = [line for line in result.out.splitlines() if line.startswith("  line ")]
    assert len(printed) == 50
    assert printed[0].startswith("  line 3: timestamp: must be an ISO 8601 date-time")
    assert "... and 10 more invalid rows (all of them are in" in result.out
    with errors.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [row["line"] for row in rows] == [str(line) for line in range(3, 63)]
    assert {row["type"] for row in rows} == {"validation_error"}
    assert rows[0]["error"].startswith("timestamp: must be an ISO 8601 date-time")


def test_strict_sends_nothing_when_a_row_is_invalid(tmp_path, capsys):
    path = write(tmp_path, "orders.csv", HEADER + GOOD_LEAD + "lead,signup,user,c,,,,yesterday\n")
    result = run(capsys, str(path), "--strict", "--token", "t", "--host", "http://127.0.0.1:9")
    assert result.status == 1
    assert "  line 3: timestamp" in result.out
    assert "Nothing was sent (--strict)" in result.out
    assert not Path(f"{path}.cms-outbox").exists()


def test_a_pipe_gets_plain_progress_lines(tmp_path, capsys):
    path = write(tmp_path, "orders.csv", HEADER + GOOD_LEAD)
    result = run(capsys, str(path), "--dry-run")
    assert "\r" not in result.out
    assert "orders.csv: done: 1/1 checked · 0 invalid" in result.out


# -- the --errors file: never the input or the outbox, never left half-written -----------------------------------


def same_file_spellings(tmp_path: Path, target: Path) -> dict[str, Path]:
    """`target` named in other ways: as given, through `..`, through a symbolic link, by a hard link."""
    (tmp_path / "sub").mkdir(exist_ok=True)
    link = tmp_path / "link-to-target"
    link.symlink_to(target)
    hard = tmp_path / "hard-link"
    if target.exists():
        os.link(target, hard)
    return {
        "same path": target,
        "another spelling": tmp_path / "sub" / ".." / target.name,
        "a symlink": link,
        **({"a hard link": hard} if target.exists() else {}),
    }


@pytest.fixture
def refusing_host() -> Iterator[str]:
    """An API that refuses the token: an import that got as far as sending stops (paused) instead of waiting."""
    with Sandbox(token="another-token").serve() as url:
        yield url


@pytest.mark.parametrize("spelling", ["same path", "another spelling", "a symlink", "a hard link"])
@pytest.mark.parametrize("mode", ["--dry-run", "send"])
def test_an_errors_file_that_is_the_input_is_refused_and_the_input_kept(
    tmp_path, capsys, refusing_host, spelling, mode
):
    content = HEADER + GOOD_LEAD + "lead,signup,user,c,,,,yesterday\n"
    path = write(tmp_path, "orders.csv", content)
    errors = same_file_spellings(tmp_path, path)[spelling]
    options = [mode] if mode != "send" else ["--token", "t", "--host", refusing_host]

    result = run(capsys, str(path), *options, "--errors", str(errors))

    assert result.status == 2
    assert f"cms import: the errors file {str(errors)!r} is the input file" in result.err
    assert path.read_text(encoding="utf-8") == content
    assert not Path(f"{path}.cms-outbox").exists()
    with pytest.raises(ValueError, match="is the input file"):
        import_events(path, kind="lead", dry_run=True, errors=errors)
    assert path.read_text(encoding="utf-8") == content
    assert sorted(tmp_path.glob(".*")) == []  # no temporary file left beside it


def queue_one_event(path: Path) -> None:
    """An outbox file at `path` holding one acknowledged event, pending (nothing listens at its host)."""
    with Outbox(path, "t", "http://127.0.0.1:9", flush_on_exit=0) as outbox:
        assert outbox.track_lead(event_name="signup", customer_external_id="u1", click_id="c1")["success"]
        outbox.close(timeout=0)


def pending_events(path: Path) -> int:
    with Outbox(path, "t", "http://127.0.0.1:9", flush_on_exit=0) as outbox:
        pending = outbox.stats()["pending"]
        outbox.close(timeout=0)
    return pending


@pytest.mark.parametrize("spelling", ["same path", "another spelling", "a symlink", "a hard link"])
@pytest.mark.parametrize("outbox", ["default", "--outbox"])
@pytest.mark.parametrize("mode", ["--dry-run", "send"])
def test_an_errors_file_that_is_the_outbox_is_refused_and_its_event_kept(
    tmp_path, capsys, refusing_host, spelling, outbox, mode
):
    path = write(tmp_path, "orders.csv", HEADER + GOOD_LEAD + "lead,signup,user,c,,,,yesterday\n")
    queue = Path(f"{path}.cms-outbox") if outbox == "default" else tmp_path / "shared.cms-outbox"
    queue_one_event(queue)
    errors = same_file_spellings(tmp_path, queue)[spelling]
    options = [mode] if mode != "send" else ["--token", "t", "--host", refusing_host]
    options += ["--outbox", str(queue)] if outbox == "--outbox" else []

    result = run(capsys, str(path), *options, "--errors", str(errors))

    assert result.status == 2
    assert f"cms import: the errors file {str(errors)!r} is the outbox" in result.err
    assert pending_events(queue) == 1


def test_import_events_refuses_an_errors_file_that_is_the_outbox_however_given(tmp_path):
    path = write(tmp_path, "orders.csv", HEADER + GOOD_LEAD)
    queue = tmp_path / "queue"
    queue_one_event(queue)
    stopped = threading.Event()
    stopped.set()  # were it not refused, the import would stop at once instead of waiting for an unreachable API
    with Outbox(queue, "t", "http://127.0.0.1:9", flush_on_exit=0) as outbox:
        given = [(outbox, queue), (queue, queue), (os.fspath(queue), tmp_path / "." / "queue")]
        # SQLite's own files beside it are the outbox too: its write-ahead log holds what is not checkpointed.
        given.append((outbox, Path(f"{queue}-wal")))
        for target, errors in given:
            with pytest.raises(ValueError, match="is the outbox"):
                import_events(path, target, kind="lead", errors=errors, stop=stopped)
        # A dry run opens no outbox, but must not overwrite the one it was given either.
        with pytest.raises(ValueError, match="is the outbox"):
            import_events(path, queue, kind="lead", dry_run=True, errors=queue)
        outbox.close(timeout=0)
    assert pending_events(queue) == 1
    errors = tmp_path / "errors.csv"
    with Sandbox().client() as client, Outbox(":memory:", client=client, rate_limit=None) as memory:
        summary = import_events(path, memory, kind="lead", errors=errors)  # an outbox in memory is no file
    assert (summary.state, summary.queued, errors.read_bytes()) == ("done", 1, b"line,type,error\r\n")


PREVIOUS_ERRORS = b"line,type,error\r\n7,validation_error,from the previous run\r\n"


def test_a_run_that_raises_halfway_leaves_the_previous_errors_file(tmp_path):
    errors = write(tmp_path, "errors.csv", PREVIOUS_ERRORS)
    bad = {"event_name": "signup", "customer_external_id": "u", "timestamp": "yesterday"}
    rows = iter([bad] * 3_000 + [{"colour": "red"}])  # read once: the unknown key is found after 3,000 problems

    with pytest.raises(MalformedInputError):
        import_events(rows, kind="lead", dry_run=True, errors=errors)

    assert errors.read_bytes() == PREVIOUS_ERRORS
    assert sorted(path.name for path in tmp_path.iterdir()) == ["errors.csv"]


def test_ctrl_c_twice_while_checking_leaves_the_previous_errors_file_or_none(tmp_path, monkeypatch):
    monkeypatch.setattr(cms_python._backfill.run, "PROGRESS_INTERVAL", 0.0)  # a progress call after every row
    path = write(tmp_path, "orders.csv", HEADER + "lead,signup,user,c,,,,yesterday\n" * 3_000)

    def interrupt_while_checking(summary):
        if summary.state == "checking" and summary.invalid >= 1_000:
            raise KeyboardInterrupt

    for previous in (PREVIOUS_ERRORS, None):
        errors = tmp_path / "errors.csv"
        if previous is not None:
            errors.write_bytes(previous)
        with pytest.raises(KeyboardInterrupt):
            import_events(path, dry_run=True, errors=errors, on_progress=interrupt_while_checking)
        assert errors.exists() == (previous is not None)
        if previous is not None:
            assert errors.read_bytes() == previous
            errors.unlink()
        assert sorted(path.name for path in tmp_path.iterdir()) == ["orders.csv"]


# A child that imports with --errors and, once 1,000 invalid rows were written, says so and waits to be killed.
KILLED_WHILE_CHECKING = """
import sys, time
import cms_python._backfill.run
from cms_python import import_events
cms_python._backfill.run.PROGRESS_INTERVAL = 0.0  # a progress call after every row
def wait_to_be_killed(summary):
    if summary.state == "checking" and summary.invalid >= 1_000:
        print("checking", flush=True)
        time.sleep(60)
import_events(sys.argv[1], dry_run=True, errors=sys.argv[2], on_progress=wait_to_be_killed)
"""


def test_kill_9_while_checking_leaves_the_previous_errors_file(tmp_path):
    path = write(tmp_path, "orders.csv", HEADER + "lead,signup,user,c,,,,yesterday\n" * 3_000)
    errors = write(tmp_path, "errors.csv", PREVIOUS_ERRORS)
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WHILE_CHECKING, str(path), str(errors)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "checking\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL  # killed halfway, not finished
    assert errors.read_bytes() == PREVIOUS_ERRORS


def test_a_finished_run_replaces_the_errors_file_keeping_its_mode_and_a_symlink(tmp_path, capsys):
    path = write(tmp_path, "orders.csv", HEADER + GOOD_LEAD + "lead,signup,user,c,,,,yesterday\n")
    target = write(tmp_path, "errors-target.csv", PREVIOUS_ERRORS)
    target.chmod(0o640)
    link = tmp_path / "errors.csv"
    link.symlink_to(target)

    assert run(capsys, str(path), "--dry-run", "--errors", str(link)).status == 1

    assert link.is_symlink()
    with target.open(newline="", encoding="utf-8") as file:
        assert [(row["line"], row["type"]) for row in csv.DictReader(file)] == [("3", "validation_error")]
    assert target.stat().st_mode & 0o777 == 0o640
    if os.geteuid() != 0:  # root may write any file
        target.chmod(0o440)
        result = run(capsys, str(path), "--dry-run", "--errors", str(link))
        assert (result.status, "Permission denied" in result.err) == (2, True)


def test_errors_to_a_stream_are_written_to_it_and_a_log_behind_stderr_is_added_to(tmp_path):
    path = write(tmp_path, "orders.csv", HEADER + "lead,signup,user,c,,,,yesterday\n")
    argv = [sys.executable, "-m", "cms_python", "import", str(path), "--dry-run", "--errors"]

    piped = subprocess.run([*argv, "/dev/stdout"], capture_output=True, timeout=60, check=False)

    assert piped.returncode == 1
    assert 'line,type,error\r\n2,validation_error,"timestamp: must be' in piped.stdout.decode()
    log = write(tmp_path, "import.log", "earlier output\n")
    inode = log.stat().st_ino
    with log.open("a") as stderr:
        logged = subprocess.run(
            [*argv, "/dev/stderr"], stderr=stderr, stdout=subprocess.DEVNULL, timeout=60, check=False
        )
    assert logged.returncode == 1
    assert log.stat().st_ino == inode  # the same file, not one renamed over it
    assert log.read_bytes().startswith(b'earlier output\nline,type,error\r\n2,validation_error,"timestamp')


# -- what messages quote of a value: its start and its length, not 5 MB -----------------------------------------

HUGE = "9" * 5_000_000 + "x"


def test_a_huge_value_is_quoted_by_its_start_and_its_length(tmp_path, capsys):
    rows = [
        {"kind": "lead", "event_name": "signup", "customer_external_id": "u1", "timestamp": HUGE},
        {"kind": HUGE, "event_name": "signup", "customer_external_id": "u2"},
        {"kind": ["lead"] * 1_000_000, "event_name": "signup", "customer_external_id": "u3"},
    ]
    path = write(tmp_path, "events.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    big_cell = "9" * 100_000 + "x"  # a CSV cell's limit is 131,072 characters
    table = write(tmp_path, "orders.csv", HEADER + f"sale,buy,u3,c,inv,{big_cell},USD,\n")

    summary = import_events(path, dry_run=True)
    (sale,) = import_events(table, dry_run=True).problems

    timestamp, kind, kinds = (problem.error for problem in summary.problems)
    assert timestamp.startswith("timestamp: must be an ISO 8601 date-time")
    assert timestamp.endswith(f", got '{'9' * 50}…' (5,000,001 characters)")
    assert kind == f'kind: must be "lead" or "sale", got \'{"9" * 50}…\' (5,000,001 characters)'
    assert kinds == "kind: must be \"lead\" or \"sale\", got ['lead', 'lead', 'lead', 'lead', 'lead', 'lead', ...]"
    assert sale.error.endswith(f", got '{'9' * 50}…' (100,001 characters)")
    result = run(capsys, str(path), "--dry-run")
    assert result.status == 1
    assert len(result.out) < 2_000
    assert "(5,000,001 characters)" in result.out


def test_a_huge_column_or_key_name_is_quoted_by_its_start_and_its_length(tmp_path, capsys):
    name = "c" * 100_000
    table = write(tmp_path, "orders.csv", f"event_name,customer_external_id,{name}\nsignup,u1,x\n")
    lines = write(tmp_path, "events.jsonl", json.dumps({"event_name": "signup", "c" * 5_000_000: 1}) + "\n")
    for path, size in [(table, "100,000"), (lines, "5,000,000")]:
        result = run(capsys, str(path), "--kind", "lead", "--dry-run")
        assert result.status == 2
        assert f"'{'c' * 50}…' ({size} characters)" in result.err
        assert len(result.err) < 1_000


# -- the Python API ----------------------------------------------------------------------------------------------


def test_rows_can_be_mappings_with_python_values():
    rows = [
        {"event_name": "signup", "customer_external_id": "u1", "click_id": "c"},
        {"eventName": "signup", "customerExternalId": "u2", "timestamp": datetime(2024, 5, 1, tzinfo=timezone.utc)},
        {"event_name": "signup", "customer_external_id": "u3", "timestamp": "2024-05-01"},
    ]
    summary = import_events(rows, kind="lead", dry_run=True)
    assert (summary.rows, summary.invalid) == (3, 1)
    assert summary.problems[0].line == 3


def test_a_row_with_an_unknown_key_is_malformed():
    with pytest.raises(MalformedInputError) as error:
        import_events([{"event_name": "a", "customer_external_id": "b"}, {"colour": "red"}], kind="lead", dry_run=True)
    assert error.value.line == 2
    assert isinstance(error.value, ValueError)


def test_api_argument_errors():
    with pytest.raises(ValueError, match="kind must be"):
        import_events([], kind="refund", dry_run=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reads the rows twice"):
        import_events(iter([]), outbox=":memory:", kind="lead", strict=True)
    with pytest.raises(ValueError, match="pass outbox="):
        import_events([], kind="lead")
    with pytest.raises(ValueError, match="client= is for an outbox opened from a path"):
        import_events([], object(), kind="lead", client=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="source must be"):
        import_events(42, dry_run=True)  # type: ignore[arg-type]


def test_idempotency_keys_come_from_the_content():
    sale = {"event_name": "buy", "customer_external_id": "u1", "invoice_id": "i1", "amount": 4999, "currency": "USD"}
    key = row_key("sale", sale)
    assert key == row_key("sale", dict(reversed(sale.items())))  # column order does not matter
    assert key != row_key("sale", {**sale, "amount": 5000})
    assert key != row_key("lead", sale)
    moment = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert row_key("lead", {"timestamp": moment}) == row_key("lead", {"timestamp": moment})
    assert key.startswith("import-")
    assert key.isascii()
    assert len(key) <= 255


def test_camel_and_snake_spellings_give_the_same_key(tmp_path):
    snake = write(tmp_path, "a.csv", "event_name,customer_external_id,click_id\nsignup,u1,c\n")
    camel = write(tmp_path, "b.csv", "clickId,customerExternalId,eventName\nc,u1,signup\n")
    keys = []
    for path in (snake, camel):
        run_ = import_events(path, kind="lead", dry_run=True)
        assert run_.invalid == 0
        ((_, values, _),) = list(read_file(path, "csv", "lead"))
        keys.append(row_key("lead", values))
    assert keys[0] == keys[1]


def test_import_cms_python_loads_neither_the_importer_nor_tqdm():
    loaded = "sorted(m for m in sys.modules if m.startswith(('cms_python._import', 'tqdm')))"
    code = f"import sys, cms_python; print({loaded})"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
