"""The command line: the settings, the rounds over every scenario's contenders, the report and the JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

import benchmark
import cms_python
from cms_python._base import MAX_IN_FLIGHT

from . import postgres
from .analytics import ANALYTICS_PACKAGES, Analytics
from .backfill import Backfill
from .clients import HAS_SNIFFIO, Clients
from .common import API_LATENCY_MS, Contender, Goal, Measure, Scenario, Settings
from .delivery import Delivery
from .enqueue import Enqueue
from .imports import Imports
from .published import PUBLISHED_PACKAGE, Published
from .server import canned_server, serve


def run(settings: Settings) -> tuple[dict[str, Measure], list[Goal], list[Goal], str]:
    """The measures, the goals, the gains (ratios reported, not judged: over a default httpx.AsyncClient without
    sniffio; the floor of a goal's ratio), and the line on the PostgreSQL scenarios (run, or why not)."""
    with ExitStack() as stack:
        host = stack.enter_context(canned_server())
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cms-bench-")))
        server, postgres_line = postgres.start_server()
        if server is None:
            print(postgres_line, file=sys.stderr, flush=True)
        else:
            stack.callback(server.close)
        scenarios: list[Scenario] = []

        def add(scenario: Scenario) -> None:
            stack.callback(scenario.close)
            scenarios.append(scenario)

        # In the report's order (the measures of a section keep it), which is also that of each round's groups.
        add(Clients(host, settings))
        if settings.published:
            add(Published(host, settings, directory))
        add(Enqueue(host, settings, directory))
        if settings.analytics:
            add(Analytics(host, settings, directory))
        add(Delivery(host, settings, directory))
        add(Backfill(host, settings, directory))
        add(Imports(settings, directory))
        if server is not None:
            add(postgres.Postgres(server, host, settings))

        measures = {name: measure for scenario in scenarios for name, measure in scenario.measures.items()}
        groups: dict[str, list[Contender]] = {}
        for scenario in scenarios:
            for name, contenders in scenario.groups.items():
                groups.setdefault(name, []).extend(contenders)
        for number in range(settings.rounds):
            print(f"round {number + 1}/{settings.rounds}", file=sys.stderr, flush=True)
            # Alternate who goes first, so neither always runs on a warmer (or more throttled) machine.
            for group in groups.values():
                for contender in group if number % 2 == 0 else reversed(group):
                    for name, value in contender().items():
                        measures[name].samples.append(value)
        for scenario in scenarios:
            scenario.after_rounds(measures)

    sections = list(dict.fromkeys(measure.scenario for measure in measures.values()))
    ordered = dict(sorted(measures.items(), key=lambda item: sections.index(item[1].scenario)))
    goals = [goal for scenario in scenarios for goal in scenario.goals(measures)]
    gains = [gain for scenario in scenarios for gain in scenario.gains(measures)]
    return ordered, goals, gains, postgres_line


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


def report(
    measures: dict[str, Measure], goals: list[Goal], gains: list[Goal], settings: Settings, postgres_line: str
) -> str:
    published = f", {settings.published_calls} published calls" if settings.published else ""
    latency_published = f", {settings.latency_published_calls} published calls" if settings.published else ""
    lines = [
        f"cms_python {cms_python.__version__}, httpx {httpx.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; {settings.rounds} rounds: {settings.sync_calls} sync calls, "
        f"{settings.async_leads} async leads{published} each; {settings.import_samples} import samples in all;",
        f"API latency scenario ({API_LATENCY_MS} ms per reply): {settings.latency_leads} async leads"
        f"{latency_published} each; the SDK's in-flight limit: {MAX_IN_FLIGHT}",
        f"sniffio {'installed' if HAS_SNIFFIO else 'absent: httpcore retries a failed import per async lock (slower)'}",
        postgres_line,
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


def as_json(
    measures: dict[str, Measure], goals: list[Goal], gains: list[Goal], settings: Settings, postgres_line: str
) -> dict[str, Any]:
    return {
        "versions": {"cms_python": cms_python.__version__, "httpx": httpx.__version__, "python": sys.version},
        "sniffio_installed": HAS_SNIFFIO,
        "postgresql": postgres_line,
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
    parser = argparse.ArgumentParser(
        prog="bench.py", description=benchmark.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
            backfill_rows=20_000, postgres_transactions=100, postgres_backlog=200,
        )  # fmt: skip
    else:
        settings = Settings(
            7, 1000, 1000, 15, 300, args.published, 640, 50, enqueue_calls=2000, delivery_events=1000,
            analytics=args.analytics, backfill_rows=1_000_000, postgres_transactions=1000, postgres_backlog=2000,
        )  # fmt: skip
    settings.sizes = args.in_flight
    if args.rounds is not None:
        settings.rounds = max(1, args.rounds)

    measures, goals, gains, postgres_line = run(settings)
    print(report(measures, goals, gains, settings, postgres_line))
    if args.json is not None:
        args.json.write_text(json.dumps(as_json(measures, goals, gains, settings, postgres_line), indent=2) + "\n")
    # --quick is a smoke check of the bench itself: its figures are too rough to fail a build on.
    return 0 if args.quick or all(goal.passed for goal in goals) else 1
