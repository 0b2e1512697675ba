"""`--published`: the PyPI cms-python-client==1.0.0's sequential `track_lead` events/s, driven in a subprocess of a
throwaway virtualenv (it is also called `cms_python`, so it never enters this process), both scenarios, among
the async rows at the first concurrency; the goal: the async SDK at concurrency 32 >= 3x it with 20 ms replies
(with replies at once no httpx client can reach that: httpx's own CPU per request exceeds a lean urllib3 call's,
so it is not a goal).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import venv
from collections.abc import Mapping
from pathlib import Path

from .clients import CONCURRENCIES, LATENCIES, LATENCY, async_group, async_key
from .common import (
    DRIVERS,
    LATENCY_PREFIX,
    TOKEN,
    WITH_LATENCY,
    Goal,
    Measure,
    Scenario,
    Settings,
    foreign_environment,
    sample,
)

PUBLISHED_PACKAGE = "cms-python-client==1.0.0"


class PublishedClient:
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
        self.process = subprocess.Popen(
            [python, "-I", DRIVERS / "published_driver.py", TOKEN, *hosts.values()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=foreign_environment(),
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


class Published(Scenario):
    def __init__(self, host: str, settings: Settings, directory: Path) -> None:
        super().__init__()
        hosts = {"plain": f"{host}/published", "latency": f"{host}{LATENCY_PREFIX}/published"}
        self._client = PublishedClient(hosts, directory)
        for section, suffix, prefix in LATENCIES:
            key, name, calls = (
                ("latency_published", "latency", settings.latency_published_calls)
                if prefix
                else ("published", "plain", settings.published_calls)
            )
            self.measures[key] = Measure(f"{PUBLISHED_PACKAGE} sequential{suffix}", "events/s", section)
            measure = functools.partial(self._client.events_per_second, name, calls)
            self.groups[async_group(section, CONCURRENCIES[0])] = [sample(key, measure)]

    def goals(self, measures: Mapping[str, Measure]) -> list[Goal]:
        sdk = measures[async_key(WITH_LATENCY, CONCURRENCIES[0], "sdk")].median
        return [
            Goal(
                f"AsyncCMSClient x{CONCURRENCIES[0]} / published sequential, {LATENCY}",
                sdk / measures["latency_published"].median,
                3.0,
                "x",
                True,
            )
        ]

    def close(self) -> None:
        self._client.close()
