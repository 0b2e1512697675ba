"""What the tests share: servers on 127.0.0.1 (HTTP, PostgreSQL), child processes, waits with a deadline, a fake
clock, the web examples served for real, and where things are."""

from pathlib import Path

#: The repository's root: the README, the spec, the examples.
ROOT = Path(__file__).resolve().parents[2]
#: This folder: the test certificate.
SUPPORT = Path(__file__).resolve().parent
