"""`--analytics`: `analytics.track()` (segment-analytics-python) and PostHog's `capture()`, run in a throwaway
virtualenv and pointed at the canned server, among the outbox's enqueues (`enqueue.GROUP`), µs per call."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import venv
from collections.abc import Mapping
from pathlib import Path

from . import enqueue
from .common import DRIVERS, ENQUEUE, Goal, Measure, Scenario, Settings, foreign_environment

ANALYTICS_PACKAGES = ("segment-analytics-python", "posthog")


class AnalyticsSDKs:
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
        self.process = subprocess.Popen(
            [python, "-I", DRIVERS / "analytics_driver.py", host],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=foreign_environment(),
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


class Analytics(Scenario):
    def __init__(self, host: str, settings: Settings, directory: Path) -> None:
        super().__init__()
        self._sdks = AnalyticsSDKs(host, directory)
        group = self.groups[enqueue.GROUP] = []
        for name, label in (("segment", "Segment analytics.track()"), ("posthog", "PostHog capture()")):
            times = functools.partial(self._sdks.us_per_call, name, settings.enqueue_calls)
            measures, contender = enqueue.enqueuer(name, label, ENQUEUE, times)
            self.measures |= measures
            group.append(contender)

    def goals(self, measures: Mapping[str, Measure]) -> list[Goal]:
        segment = measures["enqueue_segment"].median
        return [
            Goal(
                'Outbox "process" enqueue / Segment track(), medians',
                measures["enqueue_process"].median / segment,
                1.0,
                "x",
                False,
            ),
            Goal(
                "the same while delivering flat out / Segment track()",
                measures["enqueue_flat_out"].median / segment,
                2.0,
                "x",
                False,
            ),
        ]

    def gains(self, measures: Mapping[str, Measure]) -> list[Goal]:
        # What no durable enqueue can go below here.
        floor = measures["enqueue_floor"].median / measures["enqueue_segment"].median
        name = 'SQLite\'s commit alone / Segment track(), medians (the goal of Outbox "process": <= 1.0)'
        return [Goal(name, floor, 1.0, "x", False)]

    def close(self) -> None:
        self._sdks.close()
