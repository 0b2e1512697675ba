"""The `cms` command: `main([...])` in-process against a sandbox served on 127.0.0.1, and `python -m cms_python`
in subprocesses for the demo and for stopping `cms sandbox` with a signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from cms_python import CMSClient
from cms_python._cli import main
from cms_python._cli.signals import stop_on_signals
from cms_python.testing import SANDBOX_HOST, Sandbox
from cms_python.testing._summary import summary

from ..support.processes import started
from ..support.servers import Reply, has_ipv6_loopback

LEAD_ARGS = ["--event-name", "signup_started", "--customer-external-id", "user_42"]
SALE_ARGS = [
    *["--event-name", "purchase_completed", "--customer-external-id", "user_42"],
    *["--invoice-id", "inv_987", "--amount", "4999", "--currency", "USD"],
]


@pytest.fixture
def cms_sandbox() -> Sandbox:
    """The plugin's fixture, overridden: the sandbox accepts only the token the commands below send."""
    return Sandbox(token="cli-token")


@pytest.fixture
def url(cms_sandbox: Sandbox) -> Iterator[str]:
    with cms_sandbox.serve() as base:
        yield base


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("CMS_BEARER_TOKEN", "cli-token")
    monkeypatch.setenv("CMS_HOST", url)


@pytest.mark.usefixtures("env")
def test_track_lead_prints_the_result_and_exits_0(cms_sandbox, capsys):
    status = main(
        [
            "track-lead",
            *LEAD_ARGS,
            "--click-id",
            "id_123",
            *["--customer-name", "Jane Doe", "--customer-email", "jane@example.com"],
            *["--customer-avatar", "https://example.com/jane.png", "--timestamp", "2024-05-01T12:00:00Z"],
            *["--mode", "deferred", "--idempotency-key", "key-1"],
        ]
    )
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["success"] is True
    assert result["data"]["clickId"] == "id_123"
    (request,) = cms_sandbox.requests
    assert request.idempotency_key == "key-1"
    assert request.json == {
        "eventName": "signup_started",
        "customerExternalId": "user_42",
        "clickId": "id_123",
        "customerName": "Jane Doe",
        "customerEmail": "jane@example.com",
        "customerAvatar": "https://example.com/jane.png",
        "timestamp": "2024-05-01T12:00:00+00:00",
        "mode": "deferred",
    }
    assert cms_sandbox.associations == {"user_42": "id_123"}


@pytest.mark.usefixtures("env")
def test_track_sale_prints_the_result_and_exits_0(cms_sandbox, capsys):
    assert main(["track-sale", *SALE_ARGS, "--click-id", "id_123", "--timestamp", "2024-05-01T14:00:00+02:00"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["replayed"] is False
    (sale,) = cms_sandbox.sales
    assert (sale.invoice_id, sale.amount, sale.currency, sale.click_id) == ("inv_987", 4999, "USD", "id_123")
    assert sale.timestamp == "2024-05-01T14:00:00+02:00"


@pytest.mark.usefixtures("env")
def test_a_result_that_is_not_success_exits_1(cms_sandbox, capsys):
    # No click id and no deferred association: the API refuses it.
    assert main(["track-sale", *SALE_ARGS]) == 1
    result = json.loads(capsys.readouterr().out)
    assert (result["success"], result["status_code"], result["type"]) == (False, 400, "missing_click_id")
    assert cms_sandbox.sales == []


@pytest.mark.usefixtures("env")
def test_bad_values_the_sdk_refuses_exit_1_with_a_validation_error(capsys):
    assert main(["track-sale", *SALE_ARGS[:-1], "US Dollars", "--click-id", "c"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert (result["type"], list(result["details"])) == ("validation_error", ["currency"])


def test_token_and_host_options_win_over_the_environment(cms_sandbox, url, monkeypatch, capsys):
    monkeypatch.setenv("CMS_BEARER_TOKEN", "wrong-token")
    monkeypatch.setenv("CMS_HOST", "https://api.cme.sh.invalid")
    assert main(["track-lead", *LEAD_ARGS, "--click-id", "c", "--token", "cli-token", "--host", url]) == 0
    assert json.loads(capsys.readouterr().out)["success"] is True
    assert len(cms_sandbox.leads) == 1


def test_a_refused_token_exits_1(url, capsys):
    assert main(["track-lead", *LEAD_ARGS, "--click-id", "c", "--token", "wrong", "--host", url]) == 1
    assert json.loads(capsys.readouterr().out)["status_code"] == 401


def test_no_token_is_a_usage_error(url, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["track-lead", *LEAD_ARGS, "--click-id", "c", "--host", url])
    assert exit_info.value.code == 2
    assert "no API token: pass --token or set CMS_BEARER_TOKEN" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["track-lead", *LEAD_ARGS, "--host", "http://example.com"], "plain http"),
        (["track-lead", *LEAD_ARGS, "--timestamp", "2024-05-01T12:00:00"], "has no UTC offset"),
        (["track-lead", *LEAD_ARGS, "--timestamp", "yesterday"], "must be an ISO 8601 date-time"),
        (["track-lead", *LEAD_ARGS, "--mode", "later"], "invalid choice"),
        (["track-lead", "--customer-external-id", "u"], "the following arguments are required: --event-name"),
        (["track-sale", *SALE_ARGS[:-3], "49.99", "--currency", "USD"], "invalid int value"),
        (["sandbox", "--rate-limit", "0"], "rate_limit must be an int >= 1"),
        (["unknown-command"], "invalid choice"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_exit_2(monkeypatch, capsys, arguments, message):
    monkeypatch.setenv("CMS_BEARER_TOKEN", "t")
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["track-lead"], ["track-sale"], ["sandbox"], ["demo"]])
def test_help_has_a_description_and_examples(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text
    assert f"usage: cms {command[0] if command else ''}".rstrip() in text


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("cms-python-client ")


def test_demo_runs_the_journey_in_process(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert '"replayed": true' in out
    assert '"type": "duplicate_attribution"' in out
    assert "Recorded: 3 lead(s) and 2 sale(s) from 7 request(s)." in out
    assert "click click_B: 2 lead(s), 1 sale(s), revenue 4999 USD cents; customers: user_77" in out
    assert "deferred association: customer user_77 -> click click_B" in out


def _python_m(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "cms_python", *arguments]


def _child_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("CMS_")}


def test_python_m_cms_python_demo():
    completed = subprocess.run(
        _python_m("demo"), capture_output=True, text=True, timeout=60, check=False, env=_child_environment()
    )
    assert completed.returncode == 0, completed.stderr
    assert "Recorded: 3 lead(s) and 2 sale(s)" in completed.stdout
    assert completed.stderr == ""


@contextmanager
def _cms_sandbox(*arguments: str, background: bool = False) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`cms sandbox` in a child process (`background`: as a background job, SIGINT ignored), and the URL its
    banner gives."""
    argv = _python_m("sandbox", "--port", "0", "--token", "tok", *arguments)
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "env": _child_environment()}
    with started(argv, background=background, **options) as process:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("CutMeShort sandbox listening on http://"), banner
        yield process, banner.split()[4]


@pytest.mark.parametrize("background", [False, True], ids=["terminal", "background-job"])
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cms_sandbox_serves_until_stopped(stop, background):
    with _cms_sandbox(background=background) as (process, url):
        assert url.startswith("http://127.0.0.1:")
        response = httpx.post(
            f"{url}/track/lead",
            json={"eventName": "e", "customerExternalId": "u", "clickId": "c"},
            headers={"Authorization": "Bearer tok"},
        )
        assert response.status_code == 200
        process.send_signal(stop)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "Stopped." in out
    assert "Recorded: 1 lead(s) and 0 sale(s) from 1 request(s)." in out
    assert "POST /track/lead -> 200" in err
    assert "Traceback" not in err


def test_cms_sandbox_escapes_what_clients_sent_when_stopped():
    with _cms_sandbox() as (process, url):
        # A terminal's escape sequences (set the window title, clear the screen) and a lone surrogate, which no
        # encoding can print, as a client could send them.
        content = rb'{"eventName": "e", "customerExternalId": "\u001b]0;owned\u0007\u001b[2J", "clickId": "\ud800",'
        content += rb' "mode": "deferred"}'
        headers = {"Authorization": "Bearer tok", "Content-Type": "application/json"}
        assert httpx.post(f"{url}/track/lead", content=content, headers=headers).status_code == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "click \\ud800: 1 lead(s), 0 sale(s), revenue none; customers: \\x1b]0;owned\\x07\\x1b[2J" in out
    assert "deferred association: customer \\x1b]0;owned\\x07\\x1b[2J -> click \\ud800" in out
    assert not {"\x1b", "\x07"} & set(out + err)


def test_a_first_signal_asks_to_stop_a_second_interrupts_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert not stop.is_set()
        # Sent while this thread waits on the event, as `kill` would: the handler runs here, in the wait.
        sender = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
        sender.start()
        assert stop.wait(timeout=30)
        sender.join()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_the_summary_escapes_every_character_a_terminal_could_act_on():
    sandbox = Sandbox()
    with httpx.Client(transport=sandbox.transport(), headers={"Authorization": "Bearer t"}) as http:
        # Kept as they are: printable text in any script. Escaped: a bidirectional override, a C1 control
        # sequence introducer, a line separator, an invisible tag character.
        for click_id, customer in [("c\u202eevil", "Zoë 日本"), ("c", "u\x9b2J\u2028\U000e0001")]:
            lead = {"eventName": "e", "customerExternalId": customer, "clickId": click_id}
            assert http.post(f"{SANDBOX_HOST}/track/lead", json=lead).status_code == 200
    assert summary(sandbox).splitlines()[1:] == [
        "  click c\\u202eevil: 1 lead(s), 0 sale(s), revenue none; customers: Zoë 日本",
        "  click c: 1 lead(s), 0 sale(s), revenue none; customers: u\\x9b2J\\u2028\\U000e0001",
    ]


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_cms_sandbox_listens_on_ipv6():
    with _cms_sandbox("--host", "::1") as (process, url):
        assert url.startswith("http://[::1]:")
        assert process.stdout is not None
        assert process.stdout.readline() == f"  export CMS_HOST='{url}' CMS_BEARER_TOKEN=tok\n"
        with CMSClient(token="tok", host=url) as client:
            assert client.track_lead(click_id="c", event_name="e", customer_external_id="u")["success"] is True
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "Recorded: 1 lead(s)" in out


def test_cms_sandbox_reports_a_port_in_use(url, capsys):
    port = url.rsplit(":", 1)[1]
    assert main(["sandbox", "--port", port, "--quiet"]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_cms_sandbox_refuses_a_port_out_of_range(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sandbox", "--port", "99999"])
    assert exit_.value.code == 2
    assert "0 to 65535" in capsys.readouterr().err


# --- output: strict JSON on stdout, whatever the server sent and whoever reads it -----------------------------


def _run_into_a_closed_pipe(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m cms_python ...` with stdout a pipe whose reader is already gone (`cms ... | head -c1`
    once head has exited): every write the command makes fails with EPIPE."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run(
            _python_m(*arguments), stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60, check=False, env=env
        )
    finally:
        os.close(writer)


def test_track_lead_into_a_closed_pipe_exits_with_the_result(cms_sandbox, url):
    env = {**_child_environment(), "CMS_BEARER_TOKEN": "cli-token", "CMS_HOST": url}
    completed = _run_into_a_closed_pipe(["track-lead", *LEAD_ARGS, "--click-id", "id_123"], env)
    assert (completed.returncode, completed.stderr) == (0, "")
    assert len(cms_sandbox.leads) == 1  # tracked, and the exit status says so
    refused = _run_into_a_closed_pipe(["track-lead", *LEAD_ARGS, "--click-id", "id_123", "--token", "wrong"], env)
    assert (refused.returncode, refused.stderr) == (1, "")


def test_the_demo_into_a_closed_pipe_is_no_traceback():
    completed = _run_into_a_closed_pipe(["demo"], _child_environment())
    assert (completed.returncode, completed.stderr) == (0, "")


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
@pytest.mark.parametrize(
    ("body", "data"),
    [
        pytest.param(
            b'{"success": true, "data": {"name": "\\ud800 \\udfff"}}', {"name": "\ud800 \udfff"}, id="surrogates"
        ),
        pytest.param(
            b'{"success": true, "data": {"a": NaN, "b": [Infinity, -Infinity], "c": 1.5}}',
            {"a": None, "b": [None, None], "c": 1.5},
            id="nan",
        ),
        pytest.param(
            '{"success": true, "data": {"name": "Zo\u00eb \U0001f600"}}'.encode(),
            {"name": "Zo\u00eb \U0001f600"},
            id="unicode",
        ),
        pytest.param(
            b'{"success": true, "data": {"name": "\\u009b31m \\u202e \\u2028 \\u001b[2J \\u0007 \\udb40\\udc01"}}',
            {"name": "\x9b31m \u202e \u2028 \x1b[2J \x07 \U000e0001"},
            id="controls",
        ),
    ],
)
def test_the_result_is_printed_as_strict_json(server, body, data, encoding):
    server.default = Reply(body=body, headers={"Content-Type": "application/json"})
    env = {**_child_environment(), "CMS_BEARER_TOKEN": "cli-token", "CMS_HOST": server.url}
    completed = subprocess.run(
        _python_m("track-lead", *LEAD_ARGS, "--click-id", "id_123"),
        capture_output=True,
        timeout=60,
        check=False,
        env={**env, "PYTHONIOENCODING": encoding},
    )
    assert (completed.returncode, completed.stderr) == (0, b"")
    assert _strict_json(completed.stdout.decode(encoding))["data"] == data
    assert completed.stdout.decode(encoding).replace("\n", "").isprintable()  # a terminal gets nothing to act on
