"""Child processes for tests: started as from a terminal or as a background job, and always reaped; forks."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Sets SIGINT's disposition, then becomes the command: exec keeps an ignored signal ignored, as a shell's `cmd &`
# and nohup rely on. (Not Popen's preexec_fn: Python code between fork and exec can deadlock in a process with
# threads, as a test's is.)
_EXEC_WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, getattr(signal, sys.argv[1])); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


@contextmanager
def started(argv: list[str], *, background: bool = False, **options: Any) -> Iterator[subprocess.Popen[str]]:
    """`argv` running (`options` go to `subprocess.Popen`, text mode); at the end, even when the test failed,
    killed if still running, reaped and its pipes closed: nothing is left for a later test to trip on.

    `background`: started as a shell's `cmd &` or nohup starts it, with SIGINT ignored (Python then keeps it
    ignored); else with SIGINT's default action, as from a terminal, however the test run itself was started.
    """
    disposition = "SIG_IGN" if background else "SIG_DFL"
    wrapped = [sys.executable, "-S", "-c", _EXEC_WITH_SIGINT, disposition, *argv]
    with subprocess.Popen(wrapped, text=True, **options) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
    # Popen's exit closed the pipes and waited for the process.


def fork() -> int:
    """`os.fork()`, in a test process that has threads (its servers')."""
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a multi-threaded process may deadlock the child.
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()
