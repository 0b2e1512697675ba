"""What a hostile test of the CLI's signals broke (issue 17): two quick signals to `cms sandbox`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ..support import ROOT
from ..support.processes import started

posix_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX processes and signals")


@posix_only
@pytest.mark.parametrize(("second", "gap"), [(signal.SIGTERM, 0.0), (signal.SIGTERM, 0.05), (signal.SIGINT, 0.05)])
def test_cms_sandbox_stopped_by_two_quick_signals_still_prints_its_summary(second: signal.Signals, gap: float) -> None:
    # The second signal raises KeyboardInterrupt ("to stop at once"), which `cms sandbox` did not catch: a traceback
    # from inside the first signal's handler, exit by SIGINT, and no summary of what was recorded.
    argv = [sys.executable, "-m", "cms_python", "sandbox", "--port", "0"]
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "cwd": ROOT}
    with started(argv, background=True, **options) as process:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("CutMeShort sandbox listening on")
        process.send_signal(signal.SIGINT)
        time.sleep(gap)  # none: two different signals are both delivered; the same one twice only once
        process.send_signal(second)
        out, err = process.communicate(timeout=20)
    # (A KeyboardInterrupt raised where Python cannot propagate it, in a weakref callback, is only reported.)
    if process.returncode != -signal.SIGTERM:  # a SIGTERM after the sandbox's handlers were gone ends it at once
        assert process.returncode == 0, err
        assert "Recorded: 0 lead(s) and 0 sale(s) from 0 request(s)." in out
