"""Benchmark the SDK on a loopback server: `python scripts/bench.py --help` says what and how (the scenarios are
modules of scripts/benchmark/); `--quick` is CI's smoke check."""

import sys

from benchmark.main import main

if __name__ == "__main__":
    sys.exit(main())
