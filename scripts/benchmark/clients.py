"""The SDK's clients against raw httpx on the canned server, round by round:

- sync: `CMSClient.track_lead` vs `httpx.Client.post(url, json=<same body>, headers=<same headers>)`, µs/call (and
  this process's CPU µs/call, the server's excluded)
- async, at concurrency 32 and 128 (workers), replies at once and 20 ms late: `AsyncCMSClient.track_lead` vs a
  default `httpx.AsyncClient.post` (the goal: >= 0.95x on every row), and the same default client without
  sniffio (its import made to fail as where it is not installed): the gain a user gets over what they had; with
  `--in-flight`, the SDK with other limits than its `MAX_IN_FLIGHT`
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.machinery
import importlib.util
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

import cms_python._base
from cms_python import AsyncCMSClient, CMSClient

from .common import (
    API_LATENCY_MS,
    LATENCY_PREFIX,
    LEAD_BODY,
    NO_LATENCY,
    TOKEN,
    WITH_LATENCY,
    Goal,
    Measure,
    Sample,
    Scenario,
    Settings,
    check_sdk_result,
    raw_headers,
    sample,
)

#: The async rows: this many calls at once (workers), each scenario.
CONCURRENCIES = (32, 128)
# Without sniffio (anyio >= 4.11 no longer pulls it in) httpcore re-attempts `import sniffio`, a sys.path scan,
# for every async lock and semaphore it sets up. The SDK depends on it; the "without sniffio" contender shows
# what a default httpx.AsyncClient costs where it is missing (`without_sniffio`).
HAS_SNIFFIO = importlib.util.find_spec("sniffio") is not None
LATENCY = f"{API_LATENCY_MS} ms API latency"
#: (section, label suffix, path prefix) of the async rows' two scenarios.
LATENCIES = ((NO_LATENCY, "", ""), (WITH_LATENCY, f", {LATENCY}", LATENCY_PREFIX))


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
    sys.meta_path.insert(0, _NoSniffio)
    try:
        yield
    finally:
        sys.meta_path.remove(_NoSniffio)
        if saved is not None:
            sys.modules["sniffio"] = saved


@contextmanager
def in_flight(limit: int | None) -> Iterator[None]:
    """Clients made inside get `limit` slots and connections instead of the SDK's MAX_IN_FLIGHT (`--in-flight`)."""
    if limit is None:
        yield
        return
    modules: list[Any] = [cms_python._base, importlib.import_module("cms_python._async_client")]
    shipped = [module.MAX_IN_FLIGHT for module in modules]
    for module in modules:
        module.MAX_IN_FLIGHT = limit
    try:
        yield
    finally:
        for module, value in zip(modules, shipped, strict=True):
            module.MAX_IN_FLIGHT = value


class SyncContenders:
    def __init__(self, host: str, calls: int) -> None:
        self.calls = calls
        self.url = f"{host}/track/lead"
        self.headers = raw_headers()
        self.raw = httpx.Client(timeout=10.0)
        self.sdk = CMSClient(token=TOKEN, host=host)
        for _ in range(20):  # warm up: connections, caches, lazy imports
            self.raw.post(self.url, json=LEAD_BODY, headers=self.headers).raise_for_status()
            check_sdk_result(
                self.sdk.track_lead(click_id="id_123", event_name="signup_started", customer_external_id="user_42")
            )

    def _us_per_call(self, name: str, call: Callable[[], object]) -> Sample:
        """Wall µs per call (`name`), and this process's CPU µs per call, the server's excluded (`name`_cpu)."""
        cpu = time.process_time()
        start = time.perf_counter()
        for _ in range(self.calls):
            call()
        wall = time.perf_counter() - start
        return {name: wall / self.calls * 1e6, f"{name}_cpu": (time.process_time() - cpu) / self.calls * 1e6}

    def raw_us_per_call(self) -> Sample:
        post, url, headers = self.raw.post, self.url, self.headers
        return self._us_per_call("sync_raw", lambda: post(url, json=LEAD_BODY, headers=headers))

    def sdk_us_per_call(self) -> Sample:
        track_lead = self.sdk.track_lead
        return self._us_per_call(
            "sync_sdk",
            lambda: track_lead(click_id="id_123", event_name="signup_started", customer_external_id="user_42"),
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
        self.headers = raw_headers()
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
            check_sdk_result(result)
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
        clients: list[httpx.AsyncClient | AsyncCMSClient] = [self.raw, self.raw_without_sniffio, self.sdk]
        for client in clients + list(self.sized.values()):
            self.loop.run_until_complete(client.aclose())
        self.loop.close()


def async_key(section: str, concurrency: int, contender: str) -> str:
    """The name of an async row's measure."""
    return f"{'latency_' if section == WITH_LATENCY else ''}async{concurrency}_{contender}"


def async_group(section: str, concurrency: int) -> str:
    """The group of the async rows of one scenario and concurrency (other clients' contenders may join it)."""
    return f"async {concurrency}, {section}"


class Clients(Scenario):
    def __init__(self, host: str, settings: Settings) -> None:
        super().__init__()
        self.measures = {
            "sync_raw": Measure("httpx.Client.post", "µs/call"),
            "sync_sdk": Measure("CMSClient.track_lead", "µs/call"),
            "sync_raw_cpu": Measure("httpx.Client.post, client CPU", "µs/call"),
            "sync_sdk_cpu": Measure("CMSClient.track_lead, client CPU", "µs/call"),
        }
        self._sync = SyncContenders(host, settings.sync_calls)
        self._async: list[AsyncContenders] = []
        self.groups["sync"] = [self._sync.raw_us_per_call, self._sync.sdk_us_per_call]
        for section, suffix, prefix in LATENCIES:
            leads = settings.latency_leads if prefix else settings.async_leads
            for concurrency in CONCURRENCIES:
                contenders = AsyncContenders(f"{host}{prefix}", leads, concurrency, settings.sizes)
                self._async.append(contenders)
                rows: dict[str, tuple[str, Callable[[], float]]] = {
                    "raw_without_sniffio": (
                        f"httpx.AsyncClient.post x{concurrency}, without sniffio",
                        contenders.raw_without_sniffio_events_per_second,
                    ),
                    "raw": (f"httpx.AsyncClient.post x{concurrency}", contenders.raw_events_per_second),
                    "sdk": (f"AsyncCMSClient.track_lead x{concurrency}", contenders.sdk_events_per_second),
                    **{
                        f"sdk_{size}": (
                            f"AsyncCMSClient x{concurrency}, {size} in flight",
                            functools.partial(contenders.sdk_events_per_second, size),
                        )
                        for size in settings.sizes
                    },
                }
                group = self.groups[async_group(section, concurrency)] = []
                for contender, (label, measure) in rows.items():
                    key = async_key(section, concurrency, contender)
                    self.measures[key] = Measure(label + suffix, "events/s", section)
                    group.append(sample(key, measure))

    def goals(self, measures: Mapping[str, Measure]) -> list[Goal]:
        sync = measures["sync_sdk"].median / measures["sync_raw"].median
        goals = [Goal("CMSClient per call / raw httpx", sync, 1.10, "x", False)]
        for section, suffix, concurrency in self._async_rows():
            sdk = measures[async_key(section, concurrency, "sdk")].median
            raw = measures[async_key(section, concurrency, "raw")].median
            name = f"AsyncCMSClient / raw httpx.AsyncClient x{concurrency}{suffix}"
            goals.append(Goal(name, sdk / raw, 0.95, "x", True))
        return goals

    def gains(self, measures: Mapping[str, Measure]) -> list[Goal]:
        gains = []
        for section, suffix, concurrency in self._async_rows():
            sdk = measures[async_key(section, concurrency, "sdk")].median
            without = measures[async_key(section, concurrency, "raw_without_sniffio")].median
            name = f"AsyncCMSClient / httpx.AsyncClient without sniffio x{concurrency}{suffix}"
            gains.append(Goal(name, sdk / without, 1.0, "x", True))
        return gains

    @staticmethod
    def _async_rows() -> Iterator[tuple[str, str, int]]:
        for section, suffix, _ in LATENCIES:
            for concurrency in CONCURRENCIES:
                yield section, suffix, concurrency

    def close(self) -> None:
        for contenders in reversed(self._async):
            contenders.close()
        self._sync.close()
