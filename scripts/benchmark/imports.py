"""Import times, after the rounds: fresh interpreters per statement, taking turns. The goal: `from cms_python
import CMSClient` timed inside an interpreter that imported httpx first (what the SDK adds to a program that has
httpx; stable to a millisecond), minimum <= 20 ms. Also `-X importtime`'s cumulative ms of `import httpx`,
`import cms_python`, `from cms_python import AsyncCMSClient` (sums that swing by tens of ms on a busy machine),
and `python -c "import X"` wall time minus an empty interpreter's (start-up as a CLI feels it, teardown too).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from .common import IMPORTS, Goal, Measure, Scenario, Settings


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

    #: The SDK's import, timed in the interpreter after httpx's.
    after_httpx = (
        "import time, httpx; start = time.perf_counter(); from cms_python import CMSClient; "
        "print((time.perf_counter() - start) * 1000)"
    )

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

    def _timed_after_httpx(self) -> float:
        run = subprocess.run(
            [sys.executable, "-c", self.after_httpx], check=True, env=self.environment, capture_output=True, text=True
        )
        return float(run.stdout)

    def sample(self) -> dict[str, list[float]]:
        """`samples` turns of: an empty interpreter's wall time, the SDK's import after httpx's, then each
        statement's wall time and importtime."""
        times: dict[str, list[float]] = {"empty": [], "after_httpx": []}
        for _ in range(self.samples):
            times["empty"].append(self._wall("pass"))
            times["after_httpx"].append(self._timed_after_httpx())
            for name, (statement, modules) in self.statements.items():
                times.setdefault(f"{name}_wall", []).append(self._wall(statement))
                times.setdefault(f"{name}_importtime", []).append(self._importtime(statement, modules))
        return times


class Imports(Scenario):
    def __init__(self, settings: Settings, directory: Path) -> None:
        super().__init__()
        self._samples = settings.import_samples
        self._directory = directory
        self.measures = {
            "import_after_httpx": Measure("from cms_python import CMSClient, after import httpx", "ms", IMPORTS),
            "import_httpx": Measure("import httpx (-X importtime)", "ms", IMPORTS),
            "import_cms_python": Measure("import cms_python (-X importtime)", "ms", IMPORTS),
            "import_async": Measure("from cms_python import AsyncCMSClient (-X importtime)", "ms", IMPORTS),
            "wall_empty": Measure("python -c pass (wall)", "ms", IMPORTS),
            "wall_httpx": Measure("python -c 'import httpx' minus empty (wall)", "ms", IMPORTS),
            "wall_cms_python": Measure("python -c 'import cms_python' minus empty (wall)", "ms", IMPORTS),
        }

    def after_rounds(self, measures: Mapping[str, Measure]) -> None:
        print("imports", file=sys.stderr, flush=True)
        times = ImportTimes(self._samples, self._directory).sample()
        empty = statistics.median(times["empty"])
        self.measures["import_after_httpx"].samples = times["after_httpx"]
        self.measures["import_httpx"].samples = times["httpx_importtime"]
        self.measures["import_cms_python"].samples = times["cms_python_importtime"]
        self.measures["import_async"].samples = times["async_importtime"]
        self.measures["wall_empty"].samples = times["empty"]
        self.measures["wall_httpx"].samples = [value - empty for value in times["httpx_wall"]]
        self.measures["wall_cms_python"].samples = [value - empty for value in times["cms_python_wall"]]

    def goals(self, measures: Mapping[str, Measure]) -> list[Goal]:
        after_httpx = measures["import_after_httpx"].minimum
        return [Goal("from cms_python import CMSClient after import httpx, minimum", after_httpx, 20.0, "ms", False)]
