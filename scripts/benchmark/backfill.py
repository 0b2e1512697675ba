"""Backfill, once per run after the rounds: `import_events` (what `cms import` runs) on a generated CSV, in a fresh
interpreter (drivers/backfill_driver.py): rows/s read, checked and queued into an outbox file with pacing off (the
outbox delivering to the canned server meanwhile), the same per CPU second of the importing thread (what the
work costs, whatever else the machine runs), and the process's peak RSS."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from .common import BACKFILL, DRIVERS, Goal, Measure, Scenario, Settings


class BackfillRun:
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
            [sys.executable, DRIVERS / "backfill_driver.py", self.path, outbox, self.host],
            check=True,
            capture_output=True,
            text=True,
        )
        result: dict[str, float] = json.loads(driver.stdout)
        return result


class Backfill(Scenario):
    def __init__(self, host: str, settings: Settings, directory: Path) -> None:
        super().__init__()
        self._host, self._rows, self._directory = host, settings.backfill_rows, directory
        self.measures = {
            "backfill_rate": Measure(
                f"import_events: {self._rows:,} CSV rows read, checked, queued", "rows/s", BACKFILL
            ),
            "backfill_cpu": Measure(
                "import_events: the same per CPU second of the importing thread", "rows/s", BACKFILL
            ),
            "backfill_reading": Measure("import_events: reading the file through first", "rows/s", BACKFILL),
            "backfill_rss": Measure("import_events: peak RSS of the process", "MB", BACKFILL),
        }

    def after_rounds(self, measures: Mapping[str, Measure]) -> None:
        print(f"backfill: {self._rows:,} rows", file=sys.stderr, flush=True)
        backfill = BackfillRun(self._rows, self._directory, self._host).run()
        self.measures["backfill_rate"].samples = [backfill["rows"] / backfill["queueing_s"]]
        self.measures["backfill_cpu"].samples = [backfill["rows"] / backfill["queueing_cpu_s"]]
        self.measures["backfill_reading"].samples = [backfill["rows"] / backfill["reading_s"]]
        self.measures["backfill_rss"].samples = [backfill["peak_rss_mb"]]

    def goals(self, measures: Mapping[str, Measure]) -> list[Goal]:
        return [
            Goal("import_events: rows checked and queued", measures["backfill_rate"].median, 20_000, "rows/s", True),
            Goal("import_events: peak RSS", measures["backfill_rss"].median, 100, "MB", False),
        ]
