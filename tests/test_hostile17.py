"""A hostile review of the fixes of issue 17 ("Hardening, round three"): each test is a finding that failed on the
code as it was merged, with real files, processes and signals where the finding has them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from cms_python import CMSClient, Outbox
from cms_python.testing import Sandbox

from .children import started
from .conftest import LEAD, TOKEN, key_of
from .servers import LoopbackServer

ROOT = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX processes and signals")


def test_a_relative_outbox_path_names_the_same_file_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cms_sandbox: Sandbox, cms_client: CMSClient
) -> None:
    # An app that opens Outbox("outbox.sqlite3") and then changes directory (a daemon's chdir("/")): SQLite keeps
    # the file it opened, but the moved-file check looked at the path in the new directory (storage_error for an
    # event that was stored), and the delivery thread opened its connection there (a new, empty file: "no such
    # table", nothing ever delivered).
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    outbox = Outbox("outbox.sqlite3", client=cms_client, rate_limit=None)
    try:
        monkeypatch.chdir(second)
        result = outbox.track_lead(**LEAD)
        assert result["success"], result
        assert outbox.flush(timeout=10)
        assert [key_of(request) for request in cms_sandbox.requests] == [result["data"]["idempotency_key"]]
        assert not list(second.iterdir())
    finally:
        outbox.close(timeout=0)
