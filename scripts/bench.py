"""Benchmark the SDK against raw httpx (and, optionally, the published 1.0.0 client) on a loopback server.

Usage:
    python scripts/bench.py                       # full run, several minutes
    python scripts/bench.py --quick               # smoke check, a few seconds (CI)
    python scripts/bench.py --published           # also the PyPI cms-python-client==1.0.0, in its own venv
    python scripts/bench.py --json bench.json     # also write the medians, ratios and goals as JSON
    python scripts/bench.py --rounds 11           # more rounds (each contender's median is over the rounds)
    python scripts/bench.py --in-flight 8,32,64   # also the SDK with other in-flight limits (to choose its own)
    python scripts/bench.py --analytics           # also Segment's and PostHog's Python SDKs, in their own venv

A canned-response HTTP/1.1 server (keep-alive, Content-Length) runs in a subprocess on 127.0.0.1; paths under
`/published` get the 1.0.0 client's 200 shape `{"status": true, "data": "..."}`, all others the SDK's. Paths under
`/latency` (e.g. `/latency/track/lead`, `/latency/published/...`) get the same replies `API_LATENCY_MS` (20 ms)
late, the server staying concurrent (a timer per reply), as a real API's round trip would make them.
Each round runs every contender once, in alternating order, so drift (CPU frequency, other load) hits all alike:

- sync:   `CMSClient.track_lead` vs `httpx.Client.post(url, json=<same body>, headers=<same headers>)`, µs/call
- async, at concurrency 32 and 128 (workers), replies at once (1,000 leads a run) and 20 ms late (640 leads):
  `AsyncCMSClient.track_lead` vs a default `httpx.AsyncClient.post` (the goal: >= 0.95x on every row), and the
  same default client without sniffio (its import made to fail as where it is not installed): the gain a user
  gets over what they had; with `--in-flight`, the SDK with other limits than its `MAX_IN_FLIGHT`
- backfill: `import_events` (what `cms import` runs) on a generated CSV of 1,000,000 rows (20,000 with --quick),
  in a fresh interpreter: rows/s read, checked and queued into an outbox file with pacing off (the outbox
  delivering to the canned server meanwhile), the same per CPU second of the importing thread (what the work
  costs, whatever else the machine runs), and the process's peak RSS; once per run, not per round
- published (`--published`): the 1.0.0 client's sequential `track_lead` events/s, driven in a subprocess
  of a throwaway virtualenv (it is also called `cms_python`, so it never enters this process), both scenarios;
  the goal: the async SDK at concurrency 32 >= 3x it with 20 ms replies (with replies at once no httpx client
  can reach that: httpx's own CPU per request exceeds a lean urllib3 call's, so it is not a goal)
- outbox enqueue: `Outbox.track_lead` on the caller's thread, µs per call (median and p99 of each round's
  calls), for durability "process" (also from a coroutine in a running event loop), "power" and ":memory:",
  default pacing (the delivery thread sends one a second
  meanwhile); with `--analytics`, `analytics.track()` (segment-analytics-python) and PostHog's `capture()`, run
  in a throwaway virtualenv and pointed at the canned server, in the same rounds
- outbox delivery: an `Outbox` with `rate_limit=None` delivering 1,000 stored events (from construction to
  `flush()`), events/s, against sequential `CMSClient.track_lead` calls/s (the sync contender above)
- import, after the rounds: 15 fresh interpreters per statement, taking turns: `-X importtime`'s cumulative ms
  of `import httpx`, `import cms_python`, `from cms_python import AsyncCMSClient`; the goal reads the minimums
  (`import cms_python` <= `import httpx` + 20 ms); also `python -c "import X"` wall time minus an empty
  interpreter's (start-up as a CLI feels it, teardown too)

Exit status: 0 when every goal passes (always, with --quick, unless the bench itself breaks), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import importlib.machinery
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import venv
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

import cms_python
import cms_python._base
from cms_python import AsyncCMSClient, CMSClient, Outbox
from cms_python._base import MAX_IN_FLIGHT, USER_AGENT  # the exact User-Agent the SDK sends, for the raw contenders
from cms_python._outbox.sqlite import SQLiteStore  # to store events beforehand for the delivery contender

TOKEN = "bench-token-0123456789"  # the canned server accepts anything
# What the SDK puts on the wire for its track_lead(...) calls here, for the raw httpx contenders.
LEAD_BODY = {"eventName": "signup_started", "customerExternalId": "user_42", "clickId": "id_123"}
SDK_REPLY = {"success": True, "message": "Event tracked successfully", "data": {"id": "x"}}
PUBLISHED_REPLY = {"status": True, "data": "x"}
PUBLISHED_PACKAGE = "cms-python-client==1.0.0"
#: The async rows: this many calls at once (workers), each scenario.
CONCURRENCIES = (32, 128)
# The latency scenario: the canned server answers paths under LATENCY_PREFIX this late, a realistic API round trip.
API_LATENCY_MS = 20
LATENCY_PREFIX = "/latency"
# Without sniffio (anyio >= 4.11 no longer pulls it in) httpcore re-attempts `import sniffio`, a sys.path scan,
# for every async lock and semaphore it sets up. The SDK depends on it; the "without sniffio" contender shows
# what a default httpx.AsyncClient costs where it is missing (`without_sniffio`).
HAS_SNIFFIO = importlib.util.find_spec("sniffio") is not None


class _NoSniffio:
    """A meta path finder for which `import sniffio` fails as where it is not installed: after a scan of sys.path."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name == "sniffio":
            importlib.machinery.PathFinder.find_spec("sniffio_not_installed")  # the failed scan's cost
            raise ModuleNotFoundError("No module named 'sniffio'", name=name)


@contextmanager
def without_sniffio() -> Iterator[None]:
    """httpcore imports sniffio anew per request (anyio binds it once, at its own import): this covers its lookups."""
    saved = sys.modules.pop("sniffio", None)
    sys.meta_path.insert(0, _NoSniffio)  # type: ignore[arg-type]
    try:
        yield
    finally:
        sys.meta_path.remove(_NoSniffio)  # type: ignore[arg-type]
        if saved is not None:
            sys.modules["sniffio"] = saved


@contextmanager
def in_flight(limit: int | None) -> Iterator[None]:
    """Clients made inside get `limit` slots and connections instead of the SDK's MAX_IN_FLIGHT (`--in-flight`)."""
    if limit is None:
        yield
        return
    modules = [cms_python._base, importlib.import_module("cms_python._async_client")]
    shipped = [module.MAX_IN_FLIGHT for module in modules]
    for module in modules:
        module.MAX_IN_FLIGHT = limit
    try:
        yield
    finally:
        for module, value in zip(modules, shipped, strict=True):
            module.MAX_IN_FLIGHT = value


# ---------------------------------------------------------------------------------------------------------------
# The canned server (run as `bench.py --serve`): prints its port, answers until its stdin closes.


def _http_reply(body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    return head.encode() + payload


class _CannedProtocol(asyncio.Protocol):
    """Parses HTTP/1.1 requests off a keep-alive connection (pipelining too) and answers each at once, or, for
    paths under LATENCY_PREFIX, API_LATENCY_MS later (a timer; the server keeps serving meanwhile).

    A connection is expected to use one or the other: delayed replies keep their order among themselves only.
    """

    sdk_reply = _http_reply(SDK_REPLY)
    published_reply = _http_reply(PUBLISHED_REPLY)
    latency_prefix = LATENCY_PREFIX.encode()

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        # Delayed replies, oldest first: each timer sends the oldest, so pipelined replies keep their order.
        self._delayed: collections.deque[tuple[bytes, bool]] = collections.deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:end].lower()
            length = 0
            if (start := head.find(b"\r\ncontent-length:")) >= 0:
                stop = head.find(b"\r\n", start + 2)
                length = int(head[start + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            path = head.split(b" ", 2)[1]
            self._buffer = self._buffer[total:]
            close = b"\r\nconnection: close" in head
            delayed = path.startswith(self.latency_prefix)
            if delayed:
                path = path[len(self.latency_prefix) :]
            reply = self.published_reply if path.startswith(b"/published") else self.sdk_reply
            if delayed:
                self._delayed.append((reply, close))
                asyncio.get_running_loop().call_later(API_LATENCY_MS / 1000, self._send_delayed)
            else:
                self._transport.write(reply)
                if close:
                    self._transport.close()
            if close:
                return

    def _send_delayed(self) -> None:
        assert self._transport is not None
        reply, close = self._delayed.popleft()
        if self._transport.is_closing():  # the client went away meanwhile
            return
        self._transport.write(reply)
        if close:
            self._transport.close()


def serve() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_CannedProtocol, "127.0.0.1", 0, backlog=256)
        print(server.sockets[0].getsockname()[1], flush=True)
        stdin_closed = loop.create_future()

        def wait_for_eof() -> None:
            sys.stdin.read()
            loop.call_soon_threadsafe(stdin_closed.set_result, None)

        threading.Thread(target=wait_for_eof, daemon=True).start()
        await stdin_closed
        server.close()

    asyncio.run(main())


@contextmanager
def canned_server() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the canned server did not start (exit status {process.poll()})")
        port = int(line)
        yield f"http://127.0.0.1:{port}"
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------------------------------
# Contenders. Each "run" does a batch and returns its figure for the round.


def _raw_headers() -> dict[str, str]:
    # One fixed Idempotency-Key: making a fresh uuid4 per call is part of the SDK's work, not the baseline's.
    return {
        "Authorization": f"Bearer {TOKEN}",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": str(uuid.uuid4()),
        "Content-Type": "application/json",
    }


def _check_sdk_result(result: Any) -> None:
    if not (isinstance(result, dict) and result.get("success") and result.get("data") == SDK_REPLY["data"]):
        raise RuntimeError(f"the SDK did not get the canned success: {result!r}")


class SyncContenders:
    def __init__(self, host: str, calls: int) -> None:
        self.calls = calls
        self.url = f"{host}/track/lead"
        self.headers = _raw_headers()
        self.raw = httpx.Client(timeout=10.0)
        self.sdk = CMSClient(token=TOKEN, host=host)
        self.cpu: dict[str, list[float]] = {}
        for _ in range(20):  # warm up: connections, caches, lazy imports
            self.raw.post(self.url, json=LEAD_BODY, headers=self.headers).raise_for_status()
            _check_sdk_result(
                self.sdk.track_lead(click_id="id_123", event_name="signup_started", customer_external_id="user_42")
            )

    def _us_per_call(self, name: str, call: Callable[[], object]) -> float:
        """Wall µs per call; this process's CPU µs per call (the server's excluded) go to `self.cpu[name]`."""
        cpu = time.process_time()
        start = time.perf_counter()
        for _ in range(self.calls):
            call()
        wall = time.perf_counter() - start
        self.cpu.setdefault(name, []).append((time.process_time() - cpu) / self.calls * 1e6)
        return wall / self.calls * 1e6

    def raw_us_per_call(self) -> float:
        post, url, headers = self.raw.post, self.url, self.headers
        return self._us_per_call("raw", lambda: post(url, json=LEAD_BODY, headers=headers))

    def sdk_us_per_call(self) -> float:
        track_lead = self.sdk.track_lead
        return self._us_per_call(
            "sdk", lambda: track_lead(click_id="id_123", event_name="signup_started", customer_external_id="user_42")
        )

    def close(self) -> None:
        self.raw.close()
        self.sdk.close()


class AsyncContenders:
    """At one concurrency against one host: default `httpx.AsyncClient`s (with and without sniffio), the SDK, and
    the SDK with other in-flight limits (`sizes`)."""

    def __init__(self, host: str, leads: int, concurrency: int, sizes: tuple[int, ...] = ()) -> None:
        self.loop = asyncio.new_event_loop()
        self.leads = leads
        self.concurrency = concurrency
        self.url = f"{host}/track/lead"
        self.headers = _raw_headers()
        self.host = host
        self.raw = self.loop.run_until_complete(self._open_raw())
        self.raw_without_sniffio = self.loop.run_until_complete(self._open_raw())
        self.sdk = self.loop.run_until_complete(self._open_sdk(None))
        self.sized = {size: self.loop.run_until_complete(self._open_sdk(size)) for size in sizes}

    async def _open_raw(self) -> httpx.AsyncClient:
        raw = httpx.AsyncClient(timeout=10.0)  # default pool limits, as a user gets them
        await self._workers(lambda: raw.post(self.url, json=LEAD_BODY, headers=self.headers), 4 * self.concurrency)
        return raw

    async def _open_sdk(self, size: int | None) -> AsyncCMSClient:
        with in_flight(size):
            sdk = AsyncCMSClient(token=TOKEN, host=self.host)
        results = await asyncio.gather(
            *(
                sdk.track_lead(click_id="id_123", event_name="signup_started", customer_external_id="user_42")
                for _ in range(4 * self.concurrency)
            )
        )
        for result in results:
            _check_sdk_result(result)
        return sdk

    async def _workers(self, call: Callable[[], Any], total: int) -> None:
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await call()

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    def _events_per_second(self, call: Callable[[], Any]) -> float:
        start = time.perf_counter()
        self.loop.run_until_complete(self._workers(call, self.leads))
        return self.leads / (time.perf_counter() - start)

    def raw_events_per_second(self) -> float:
        raw, url, headers = self.raw, self.url, self.headers
        return self._events_per_second(lambda: raw.post(url, json=LEAD_BODY, headers=headers))

    def raw_without_sniffio_events_per_second(self) -> float:
        raw, url, headers = self.raw_without_sniffio, self.url, self.headers
        with without_sniffio():
            return self._events_per_second(lambda: raw.post(url, json=LEAD_BODY, headers=headers))

    def sdk_events_per_second(self, size: int | None = None) -> float:
        sdk = self.sdk if size is None else self.sized[size]
        return self._events_per_second(
            lambda: sdk.track_lead(click_id="id_123", event_name="signup_started", customer_external_id="user_42")
        )

    def close(self) -> None:
        for client in (self.raw, self.raw_without_sniffio, self.sdk, *self.sized.values()):
            self.loop.run_until_complete(client.aclose())
        self.loop.close()


class ImportTimes:
    """Fresh interpreters running an import statement: wall time, and `-X importtime`'s cumulative time of the
    modules it names (each with all it imported).

    Every module is imported from cached bytecode, as after a `pip install` (which compiles it): the .pyc files
    go to a private `PYTHONPYCACHEPREFIX`, written by a warm-up run, even when PYTHONDONTWRITEBYTECODE is set
    (an editable install would otherwise compile `cms_python/` and `generated/` from source on every run).
    The statements take turns, sample after sample, so that the machine's moods hit them alike; the goal reads
    the minimum, the least disturbed run, since medians on a shared machine swing by 10 ms.
    """

    #: name: (statement, the modules whose cumulative times add up to its cost)
    statements: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "httpx": ("import httpx", ("httpx",)),
        "cms_python": ("import cms_python", ("cms_python",)),
        "async": ("from cms_python import AsyncCMSClient", ("cms_python", "cms_python._async_client")),
    }

    def __init__(self, samples: int, directory: Path) -> None:
        self.samples = samples
        self.environment = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
        self.environment["PYTHONPYCACHEPREFIX"] = str(directory / "pycache")
        for statement, modules in self.statements.values():  # write the .pyc files, warm the disk cache
            self._importtime(statement, modules)

    def _wall(self, statement: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True, env=self.environment)
        return (time.perf_counter() - start) * 1000

    def _importtime(self, statement: str, modules: tuple[str, ...]) -> float:
        """The sum of the named modules' lines of `-X importtime` (cumulative µs), in ms."""
        run = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", statement],
            check=True,
            env=self.environment,
            capture_output=True,
            text=True,
        )
        cumulative = {}
        for line in run.stderr.splitlines():
            _, microseconds, name = line.split("|")
            if microseconds.strip().isdigit():  # not the header line
                cumulative[name.strip()] = int(microseconds) / 1000
        missing = set(modules) - set(cumulative)
        if missing:
            raise RuntimeError(f"no -X importtime line for {', '.join(sorted(missing))}")
        return sum(cumulative[module] for module in modules)

    def sample(self) -> dict[str, list[float]]:
        """`samples` turns of: an empty interpreter's wall time, then each statement's wall time and importtime."""
        times: dict[str, list[float]] = {"empty": []}
        for _ in range(self.samples):
            times["empty"].append(self._wall("pass"))
            for name, (statement, modules) in self.statements.items():
                times.setdefault(f"{name}_wall", []).append(self._wall(statement))
                times.setdefault(f"{name}_importtime", []).append(self._importtime(statement, modules))
        return times


class OutboxEnqueue:
    """`Outbox.track_lead` per call on this thread, one outbox per durability, default pacing (60 a minute)."""

    kinds = ("process", "process_async", "power", "memory")

    def __init__(self, host: str, calls: int, directory: Path) -> None:
        self.calls = calls
        self.outboxes = {
            "process": Outbox(directory / "process.sqlite3", TOKEN, host),
            "power": Outbox(directory / "power.sqlite3", TOKEN, host, durability="power"),
            "memory": Outbox(":memory:", TOKEN, host),
        }
        self.batch = 0
        for outbox in self.outboxes.values():  # warm up: the thread starts, statements are compiled
            self._times(outbox, 50)

    def _times(self, outbox: Any, calls: int) -> list[float]:
        self.batch += 1
        track_lead, clock, times = outbox.track_lead, time.perf_counter, []
        for number in range(calls):
            customer = f"user_{self.batch}_{number}"
            start = clock()
            result = track_lead(click_id="id_123", event_name="signup_started", customer_external_id=customer)
            times.append(clock() - start)
            if not result["success"]:
                raise RuntimeError(f"the outbox refused an event: {result!r}")
        return [seconds * 1e6 for seconds in times]

    def us_per_call(self, kind: str) -> list[float]:
        if kind == "process_async":  # the same calls from a coroutine, as an async web handler makes them

            async def handler() -> list[float]:
                return self._times(self.outboxes["process"], self.calls)

            return asyncio.run(handler())
        return self._times(self.outboxes[kind], self.calls)

    def close(self) -> None:
        for outbox in self.outboxes.values():
            outbox.close(timeout=0)


class OutboxDelivery:
    """An `Outbox` without pacing delivering `events` stored events: from construction to `flush()`, events/s."""

    def __init__(self, host: str, events: int, directory: Path) -> None:
        self.host, self.events, self.directory = host, events, directory
        self.runs = 0

    def events_per_second(self) -> float:
        self.runs += 1
        path = self.directory / f"delivery{self.runs}.sqlite3"
        store = SQLiteStore(str(path))  # the events are stored beforehand, as by an app's enqueues
        body = json.dumps(LEAD_BODY)
        for number in range(self.events):
            store.enqueue(
                "lead",
                str(uuid.uuid4()),
                f"user_{number}",
                body,
                stamped_at=time.time(),
                now=time.time(),
                max_pending=10**9,
            )
        store.close()
        start = time.perf_counter()
        outbox = Outbox(path, TOKEN, self.host, rate_limit=None)
        if not outbox.flush(timeout=120):
            raise RuntimeError("the outbox did not deliver its events")
        elapsed = time.perf_counter() - start
        outbox.close()
        return self.events / elapsed


# argv: host. Each stdin line "<name> <calls>" times that many calls of one SDK's enqueue, prints the µs per call.
_ANALYTICS_DRIVER = """
import json, logging, sys, time
import posthog
import segment.analytics as analytics

logging.disable(logging.CRITICAL)
host = sys.argv[1]
analytics.write_key = "bench-write-key"
analytics.host = host
client = posthog.Posthog("phc_bench_key", host=host)
calls = {
    "segment": lambda number: analytics.track(f"user_{number}", "signup_started", {"click_id": "id_123"}),
    "posthog": lambda number: client.capture("signup_started", distinct_id=f"user_{number}",
                                             properties={"click_id": "id_123"}),
}
for name, call in calls.items():  # warm up: consumer threads started
    for number in range(50):
        call(number)
print("ready", flush=True)
for line in sys.stdin:
    name, count = line.split()
    call, clock, times = calls[name], time.perf_counter, []
    for number in range(int(count)):
        start = clock()
        call(number)
        times.append((clock() - start) * 1e6)
    print(json.dumps(times), flush=True)
"""
ANALYTICS_PACKAGES = ("segment-analytics-python", "posthog")


class Analytics:
    """Segment's and PostHog's Python SDKs in a throwaway venv, pointed at the canned server: µs per enqueue."""

    def __init__(self, host: str, directory: Path) -> None:
        env_dir = directory / "analytics-venv"
        print(f"Installing {', '.join(ANALYTICS_PACKAGES)} into a throwaway venv ...", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True).create(env_dir)
        python = env_dir / "bin" / "python"
        install = subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *ANALYTICS_PACKAGES],
            check=False,
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            raise RuntimeError(f"pip could not install {ANALYTICS_PACKAGES}:\n{install.stdout}{install.stderr}")
        installed = subprocess.run(
            [python, "-m", "pip", "list", "--format=freeze"], check=True, capture_output=True, text=True
        ).stdout.splitlines()
        wanted = [line for line in installed if line.split("==")[0].lower() in ANALYTICS_PACKAGES]
        print(f"Installed {', '.join(wanted)}", file=sys.stderr, flush=True)
        driver = directory / "analytics_driver.py"
        driver.write_text(_ANALYTICS_DRIVER)
        environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.process = subprocess.Popen(
            [python, "-I", driver, host], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the analytics driver did not start")

    def us_per_call(self, name: str, calls: int) -> list[float]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{name} {calls}\n")
        self.process.stdin.flush()
        times: list[float] = json.loads(self.process.stdout.readline())
        return times

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# argv: the token, then one host per client; each stdin line "<client index> <calls>" runs a batch, prints events/s.
_DRIVER = """
import sys, time
from cms_python import CMSClient

clients = [CMSClient(token=sys.argv[1], host=host) for host in sys.argv[2:]]
lead = dict(click_id="id_123", event_name="signup_started", customer_external_id="user_42")
for client in clients:
    result = client.track_lead(**lead)
    if result != {"status": True, "data": "x"}:
        raise SystemExit(f"unexpected result: {result!r}")
    for _ in range(20):
        client.track_lead(**lead)
print("ready", flush=True)
for line in sys.stdin:
    index, calls = map(int, line.split())
    client = clients[index]
    start = time.perf_counter()
    for _ in range(calls):
        client.track_lead(**lead)
    print(calls / (time.perf_counter() - start), flush=True)
"""


class Published:
    """The 1.0.0 client in a throwaway venv, driven by a subprocess that runs a batch per line on its stdin.

    `hosts` names the hosts it gets a client for (e.g. the plain and the latency scenario's).
    """

    def __init__(self, hosts: dict[str, str], directory: Path) -> None:
        self.indices = {name: index for index, name in enumerate(hosts)}
        env_dir = directory / "venv"
        print(f"Installing {PUBLISHED_PACKAGE} into a throwaway venv ...", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True).create(env_dir)
        python = env_dir / "bin" / "python"
        install = subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PUBLISHED_PACKAGE],
            check=False,
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            raise RuntimeError(f"pip could not install {PUBLISHED_PACKAGE}:\n{install.stdout}{install.stderr}")
        driver = directory / "driver.py"
        driver.write_text(_DRIVER)
        # A clean environment for it: not this venv's packages, and its own `cms_python`.
        environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.process = subprocess.Popen(
            [python, "-I", driver, TOKEN, *hosts.values()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
            cwd=directory,
        )
        if self._read() != "ready":
            raise RuntimeError("the published client's driver did not start")

    def _read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line:
            raise RuntimeError(f"the published client's driver stopped (exit status {self.process.wait()})")
        return line

    def events_per_second(self, host: str, calls: int) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{self.indices[host]} {calls}\n")
        self.process.stdin.flush()
        return float(self._read())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


# argv: the CSV file, the outbox path, the host. Prints a JSON object: rows, seconds reading / queueing, peak RSS.
_BACKFILL_DRIVER = """
import json, resource, sys, threading, time
from cms_python import CMSClient, import_events

path, outbox, host = sys.argv[1:4]
marks, cpu = {}, {}
queued = threading.Event()

def progress(summary):  # called in this (the importing) thread
    marks.setdefault(summary.state, time.perf_counter())
    cpu.setdefault(summary.state, time.thread_time())
    if summary.state == "delivering":  # everything is queued: the figure is taken, delivery is not measured
        queued.set()

start = time.perf_counter()
with CMSClient("bench-token", host) as client:
    summary = import_events(path, outbox, client=client, rate_limit=None, on_progress=progress, stop=queued)
if summary.invalid or summary.queued != summary.rows:
    raise SystemExit(f"unexpected summary: {summary}")
print(json.dumps({
    "rows": summary.rows,
    "reading_s": marks["queueing"] - start,
    "queueing_s": marks["delivering"] - marks["queueing"],
    "queueing_cpu_s": cpu["delivering"] - cpu["queueing"],
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


class Backfill:
    """`import_events` on a generated CSV of leads and sales in turn (each with a click id and a timestamp), run
    in a fresh interpreter so that its peak RSS is the import's own."""

    def __init__(self, rows: int, directory: Path, host: str) -> None:
        self.rows = rows
        self.directory = directory
        self.host = host
        self.path = directory / "backfill.csv"
        with self.path.open("w", encoding="utf-8", newline="") as file:
            file.write("kind,event_name,customer_external_id,click_id,invoice_id,amount,currency,timestamp\n")
            for number in range(rows):
                moment = f"2025-{1 + number % 12:02}-{1 + number % 28:02}T{number % 24:02}:{number % 60:02}:00Z"
                if number % 2:
                    file.write(f"sale,purchase_completed,user_{number},click_{number},inv_{number},4999,USD,{moment}\n")
                else:
                    file.write(f"lead,signup_started,user_{number},click_{number},,,,{moment}\n")

    def run(self) -> dict[str, float]:
        outbox = self.directory / "backfill.cms-outbox"
        for leftover in self.directory.glob("backfill.cms-outbox*"):
            leftover.unlink()
        driver = subprocess.run(
            [sys.executable, "-c", _BACKFILL_DRIVER, str(self.path), str(outbox), self.host],
            check=True,
            capture_output=True,
            text=True,
        )
        result: dict[str, float] = json.loads(driver.stdout)
        return result


# ---------------------------------------------------------------------------------------------------------------
# Running, reporting.


@dataclass
class Settings:
    rounds: int
    sync_calls: int
    async_leads: int
    import_samples: int  # fresh interpreters per import statement, in all (not per round)
    published_calls: int
    published: bool
    latency_leads: int  # the API latency scenario's async leads per run
    latency_published_calls: int  # and its published client's sequential calls per run
    enqueue_calls: int  # outbox (and analytics SDK) enqueues per contender per round
    delivery_events: int  # events an outbox delivers per round
    analytics: bool
    backfill_rows: int  # the generated CSV's rows for the backfill scenario
    sizes: tuple[int, ...] = ()  # `--in-flight`: the SDK also with these in-flight limits


NO_LATENCY = "loopback, replies at once"
ENQUEUE = "background delivery: an enqueue on the caller's thread; an outbox's delivery"
WITH_LATENCY = f"every reply {API_LATENCY_MS} ms late (API latency scenario)"
BACKFILL = "backfill: cms import's work, pacing off, once per run"
IMPORTS = "fresh interpreters, taking turns"


@dataclass
class Measure:
    label: str
    unit: str
    scenario: str = NO_LATENCY
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def minimum(self) -> float:
        return min(self.samples)


@dataclass
class Goal:
    name: str
    value: float
    limit: float
    unit: str
    higher_is_better: bool

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit


def _async_key(scenario: str, concurrency: int, contender: str) -> str:
    return f"{'latency_' if scenario == WITH_LATENCY else ''}async{concurrency}_{contender}"


def run(settings: Settings) -> tuple[dict[str, Measure], list[Goal], list[Goal]]:
    """The measures, the goals, and the gains over a default httpx.AsyncClient without sniffio (not goals)."""
    measures = {
        "sync_raw": Measure("httpx.Client.post", "µs/call"),
        "sync_sdk": Measure("CMSClient.track_lead", "µs/call"),
        "sync_raw_cpu": Measure("httpx.Client.post, client CPU", "µs/call"),
        "sync_sdk_cpu": Measure("CMSClient.track_lead, client CPU", "µs/call"),
    }
    latency = f"{API_LATENCY_MS} ms API latency"
    for scenario, suffix in ((NO_LATENCY, ""), (WITH_LATENCY, f", {latency}")):
        for concurrency in CONCURRENCIES:
            contenders = {
                "raw_without_sniffio": f"httpx.AsyncClient.post x{concurrency}, without sniffio",
                "raw": f"httpx.AsyncClient.post x{concurrency}",
                "sdk": f"AsyncCMSClient.track_lead x{concurrency}",
                **{f"sdk_{size}": f"AsyncCMSClient x{concurrency}, {size} in flight" for size in settings.sizes},
            }
            for contender, label in contenders.items():
                measures[_async_key(scenario, concurrency, contender)] = Measure(label + suffix, "events/s", scenario)
        if settings.published:
            key = "latency_published" if scenario == WITH_LATENCY else "published"
            measures[key] = Measure(f"{PUBLISHED_PACKAGE} sequential{suffix}", "events/s", scenario)
    enqueuers = {
        "process": 'Outbox "process"',
        "process_async": 'Outbox "process", in an event loop',
        "power": 'Outbox "power"',
        "memory": 'Outbox ":memory:"',
    }
    if settings.analytics:
        enqueuers |= {"segment": "Segment analytics.track()", "posthog": "PostHog capture()"}
    for name, label in enqueuers.items():
        measures[f"enqueue_{name}"] = Measure(f"{label}, median", "µs/call", ENQUEUE)
        measures[f"enqueue_{name}_p99"] = Measure(f"{label}, p99", "µs/call", ENQUEUE)
    measures["outbox_delivery"] = Measure(
        f"Outbox delivery, rate_limit=None, {settings.delivery_events} events", "events/s", ENQUEUE
    )
    measures["sequential_calls"] = Measure("CMSClient.track_lead sequential (from µs/call)", "calls/s", ENQUEUE)
    measures["backfill_rate"] = Measure(
        f"import_events: {settings.backfill_rows:,} CSV rows read, checked, queued", "rows/s", BACKFILL
    )
    measures["backfill_cpu"] = Measure(
        "import_events: the same per CPU second of the importing thread", "rows/s", BACKFILL
    )
    measures["backfill_reading"] = Measure("import_events: reading the file through first", "rows/s", BACKFILL)
    measures["backfill_rss"] = Measure("import_events: peak RSS of the process", "MB", BACKFILL)
    imports = {
        "import_httpx": Measure("import httpx (-X importtime)", "ms", IMPORTS),
        "import_cms_python": Measure("import cms_python (-X importtime)", "ms", IMPORTS),
        "import_async": Measure("from cms_python import AsyncCMSClient (-X importtime)", "ms", IMPORTS),
        "wall_empty": Measure("python -c pass (wall)", "ms", IMPORTS),
        "wall_httpx": Measure("python -c 'import httpx' minus empty (wall)", "ms", IMPORTS),
        "wall_cms_python": Measure("python -c 'import cms_python' minus empty (wall)", "ms", IMPORTS),
    }

    with ExitStack() as stack:
        host = stack.enter_context(canned_server())
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cms-bench-")))
        published = None
        if settings.published:
            hosts = {"plain": f"{host}/published", "latency": f"{host}{LATENCY_PREFIX}/published"}
            published = Published(hosts, directory)
            stack.callback(published.close)
        sync = SyncContenders(host, settings.sync_calls)
        stack.callback(sync.close)
        groups: list[list[tuple[str, Callable[[], float]]]] = [
            [("sync_raw", sync.raw_us_per_call), ("sync_sdk", sync.sdk_us_per_call)]
        ]
        for scenario, scenario_host, leads in (
            (NO_LATENCY, host, settings.async_leads),
            (WITH_LATENCY, f"{host}{LATENCY_PREFIX}", settings.latency_leads),
        ):
            for concurrency in CONCURRENCIES:
                contenders = AsyncContenders(scenario_host, leads, concurrency, settings.sizes)
                stack.callback(contenders.close)
                group = [
                    (
                        _async_key(scenario, concurrency, "raw_without_sniffio"),
                        contenders.raw_without_sniffio_events_per_second,
                    ),
                    (_async_key(scenario, concurrency, "raw"), contenders.raw_events_per_second),
                    (_async_key(scenario, concurrency, "sdk"), contenders.sdk_events_per_second),
                ]
                group += [
                    (
                        _async_key(scenario, concurrency, f"sdk_{size}"),
                        functools.partial(contenders.sdk_events_per_second, size),
                    )
                    for size in settings.sizes
                ]
                if published is not None and concurrency == CONCURRENCIES[0]:
                    name, calls = (
                        ("latency", settings.latency_published_calls)
                        if scenario == WITH_LATENCY
                        else ("plain", settings.published_calls)
                    )
                    key = "latency_published" if scenario == WITH_LATENCY else "published"
                    group.append((key, functools.partial(published.events_per_second, name, calls)))
                groups.append(group)
        enqueue = OutboxEnqueue(host, settings.enqueue_calls, directory)
        stack.callback(enqueue.close)
        delivery = OutboxDelivery(host, settings.delivery_events, directory)
        analytics = None
        if settings.analytics:
            analytics = Analytics(host, directory)
            stack.callback(analytics.close)
        for number in range(settings.rounds):
            print(f"round {number + 1}/{settings.rounds}", file=sys.stderr, flush=True)
            # Alternate who goes first, so neither always runs on a warmer (or more throttled) machine.
            for group in groups:
                for name, measure in group if number % 2 == 0 else reversed(group):
                    measures[name].samples.append(measure())
            enqueuers_now: list[tuple[str, Callable[[], list[float]]]] = [
                (kind, functools.partial(enqueue.us_per_call, kind)) for kind in OutboxEnqueue.kinds
            ]
            if analytics is not None:
                for name in ("segment", "posthog"):
                    enqueuers_now.append((name, functools.partial(analytics.us_per_call, name, settings.enqueue_calls)))
            for name, batch in enqueuers_now if number % 2 == 0 else reversed(enqueuers_now):
                times = batch()
                measures[f"enqueue_{name}"].samples.append(statistics.median(times))
                measures[f"enqueue_{name}_p99"].samples.append(_p99(times))
            measures["outbox_delivery"].samples.append(delivery.events_per_second())
        print(f"backfill: {settings.backfill_rows:,} rows", file=sys.stderr, flush=True)
        backfill = Backfill(settings.backfill_rows, directory, host).run()
        measures["backfill_rate"].samples = [backfill["rows"] / backfill["queueing_s"]]
        measures["backfill_cpu"].samples = [backfill["rows"] / backfill["queueing_cpu_s"]]
        measures["backfill_reading"].samples = [backfill["rows"] / backfill["reading_s"]]
        measures["backfill_rss"].samples = [backfill["peak_rss_mb"]]
        print("imports", file=sys.stderr, flush=True)
        times = ImportTimes(settings.import_samples, directory).sample()

    measures["sequential_calls"].samples = [1e6 / value for value in measures["sync_sdk"].samples]
    measures["sync_raw_cpu"].samples = sync.cpu["raw"]
    measures["sync_sdk_cpu"].samples = sync.cpu["sdk"]
    empty = statistics.median(times["empty"])
    imports["import_httpx"].samples = times["httpx_importtime"]
    imports["import_cms_python"].samples = times["cms_python_importtime"]
    imports["import_async"].samples = times["async_importtime"]
    imports["wall_empty"].samples = times["empty"]
    imports["wall_httpx"].samples = [value - empty for value in times["httpx_wall"]]
    imports["wall_cms_python"].samples = [value - empty for value in times["cms_python_wall"]]
    measures.update(imports)

    def median(name: str) -> float:
        return measures[name].median

    goals = [
        Goal("CMSClient per call / raw httpx", median("sync_sdk") / median("sync_raw"), 1.10, "x", False),
        Goal(
            "import cms_python - import httpx (importtime, minimum)",
            measures["import_cms_python"].minimum - measures["import_httpx"].minimum,
            20.0,
            "ms",
            False,
        ),
        Goal('Outbox ":memory:" enqueue, median', median("enqueue_memory"), 15.0, "µs", False),
        Goal(
            "Outbox delivery (no pacing) / sequential CMSClient",
            median("outbox_delivery") / median("sequential_calls"),
            0.9,
            "x",
            True,
        ),
        Goal("import_events: rows checked and queued", median("backfill_rate"), 20_000, "rows/s", True),
        Goal("import_events: peak RSS", median("backfill_rss"), 100, "MB", False),
    ]
    if settings.analytics:
        goals.append(
            Goal(
                'Outbox "process" enqueue / Segment track(), medians',
                median("enqueue_process") / median("enqueue_segment"),
                1.0,
                "x",
                False,
            )
        )
    gains = []
    for scenario, suffix in ((NO_LATENCY, ""), (WITH_LATENCY, f", {latency}")):
        for concurrency in CONCURRENCIES:
            sdk = median(_async_key(scenario, concurrency, "sdk"))
            raw = median(_async_key(scenario, concurrency, "raw"))
            without = median(_async_key(scenario, concurrency, "raw_without_sniffio"))
            goals.append(
                Goal(f"AsyncCMSClient / raw httpx.AsyncClient x{concurrency}{suffix}", sdk / raw, 0.95, "x", True)
            )
            gains.append(
                Goal(
                    f"AsyncCMSClient / httpx.AsyncClient without sniffio x{concurrency}{suffix}",
                    sdk / without,
                    1.0,
                    "x",
                    True,
                )
            )
    if settings.published:
        goals.append(
            Goal(
                f"AsyncCMSClient x{CONCURRENCIES[0]} / published sequential, {latency}",
                median(_async_key(WITH_LATENCY, CONCURRENCIES[0], "sdk")) / median("latency_published"),
                3.0,
                "x",
                True,
            )
        )
    return measures, goals, gains


def _goal_lines(title: str, goals: list[Goal], verdicts: bool) -> list[str]:
    width = max(len(title), *(len(goal.name) for goal in goals))
    lines = ["", f"{title:<{width}} {'value':>10}" + (f" {'limit':>12}  result" if verdicts else "")]
    for goal in goals:
        value = f"{goal.value:.2f} {goal.unit}"
        if verdicts:
            limit = f"{'>=' if goal.higher_is_better else '<='} {goal.limit:.2f} {goal.unit}"
            lines.append(f"{goal.name:<{width}} {value:>10} {limit:>12}  {'PASS' if goal.passed else 'FAIL'}")
        else:
            lines.append(f"{goal.name:<{width}} {value:>10}")
    return lines


def report(measures: dict[str, Measure], goals: list[Goal], gains: list[Goal], settings: Settings) -> str:
    published = f", {settings.published_calls} published calls" if settings.published else ""
    latency_published = f", {settings.latency_published_calls} published calls" if settings.published else ""
    lines = [
        f"cms_python {cms_python.__version__}, httpx {httpx.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; {settings.rounds} rounds: {settings.sync_calls} sync calls, "
        f"{settings.async_leads} async leads{published} each; {settings.import_samples} import samples in all;",
        f"API latency scenario ({API_LATENCY_MS} ms per reply): {settings.latency_leads} async leads"
        f"{latency_published} each; the SDK's in-flight limit: {MAX_IN_FLIGHT}",
        f"sniffio {'installed' if HAS_SNIFFIO else 'absent: httpcore retries a failed import per async lock (slower)'}",
    ]
    width = max(len("contender"), *(len(measure.label) for measure in measures.values()))
    lines += ["", f"{'contender':<{width}} {'median':>10} {'min':>10} {'max':>10}  unit"]
    scenario = ""
    for measure in measures.values():
        if measure.scenario != scenario:
            scenario = measure.scenario
            lines.append(f"-- {scenario}")
        low, high = min(measure.samples), max(measure.samples)
        lines.append(f"{measure.label:<{width}} {measure.median:>10.1f} {low:>10.1f} {high:>10.1f}  {measure.unit}")
    lines += _goal_lines("goal (from the medians; imports: minimums)", goals, verdicts=True)
    lines += _goal_lines("gain (medians)", gains, verdicts=False)
    return "\n".join(lines)


def _goals_json(goals: list[Goal]) -> list[dict[str, Any]]:
    return [
        {
            "name": goal.name,
            "value": goal.value,
            "limit": goal.limit,
            "unit": goal.unit,
            "higher_is_better": goal.higher_is_better,
            "pass": goal.passed,
        }
        for goal in goals
    ]


def as_json(measures: dict[str, Measure], goals: list[Goal], gains: list[Goal], settings: Settings) -> dict[str, Any]:
    return {
        "versions": {"cms_python": cms_python.__version__, "httpx": httpx.__version__, "python": sys.version},
        "sniffio_installed": HAS_SNIFFIO,
        "settings": vars(settings),
        "api_latency_ms": API_LATENCY_MS,
        "max_in_flight": MAX_IN_FLIGHT,
        "results": {
            name: {
                "label": m.label,
                "unit": m.unit,
                "scenario": m.scenario,
                "median": m.median,
                "min": m.minimum,
                "samples": m.samples,
            }
            for name, m in measures.items()
        },
        "goals": _goals_json(goals),
        "gains": [{"name": gain.name, "value": gain.value, "unit": gain.unit} for gain in gains],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny run: a smoke check, not a measurement")
    parser.add_argument("--published", action="store_true", help=f"also measure {PUBLISHED_PACKAGE} (needs PyPI)")
    parser.add_argument(
        "--analytics", action="store_true", help=f"also measure {' and '.join(ANALYTICS_PACKAGES)} (needs PyPI)"
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="write the results as JSON to PATH")
    parser.add_argument("--rounds", type=int, help="rounds (default 7, or 2 with --quick)")
    parser.add_argument(
        "--in-flight",
        metavar="N,N,...",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        default=(),
        help=f"also the SDK with these in-flight limits (and pool sizes) instead of its {MAX_IN_FLIGHT}",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    if args.quick:  # the latency scenario shrunk to about 0.1 s a contender (a smoke check of its code path)
        settings = Settings(
            2, 100, 200, 1, 50, args.published, 64, 5, enqueue_calls=200, delivery_events=100, analytics=args.analytics,
            backfill_rows=20_000,
        )  # fmt: skip
    else:
        settings = Settings(
            7, 1000, 1000, 15, 300, args.published, 640, 50, enqueue_calls=2000, delivery_events=1000,
            analytics=args.analytics, backfill_rows=1_000_000,
        )  # fmt: skip
    settings.sizes = args.in_flight
    if args.rounds is not None:
        settings.rounds = max(1, args.rounds)

    measures, goals, gains = run(settings)
    print(report(measures, goals, gains, settings))
    if args.json is not None:
        args.json.write_text(json.dumps(as_json(measures, goals, gains, settings), indent=2) + "\n")
    # --quick is a smoke check of the bench itself: its figures are too rough to fail a build on.
    return 0 if args.quick or all(goal.passed for goal in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
