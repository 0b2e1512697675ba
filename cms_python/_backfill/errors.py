"""The `errors` file of an import: where it may not be (the input, the outbox), and how it is written (whole or
not at all)."""

from __future__ import annotations

import csv
import errno
import os
import re
import secrets
import stat
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .summary import RowProblem

if TYPE_CHECKING:
    from .._outbox import FailedEvent, Outbox

#: The files an outbox is kept in: SQLite's database, and beside it the write-ahead log that holds the latest
#: commits until a checkpoint (and the shared-memory index, and a rollback journal).
_OUTBOX_FILES = ("", "-wal", "-shm", "-journal")
# An outbox named by a URL (a database server's) or kept in memory is in no file.
_NOT_A_FILE = re.compile(r":memory:$|[A-Za-z][A-Za-z0-9+.-]*://")


def refuse_to_overwrite(
    errors: str | os.PathLike[str],
    input_path: str | os.PathLike[str] | None,
    outbox: Outbox | str | os.PathLike[str] | None,
) -> None:
    """`ValueError` if the `errors` file is the input or the outbox, however the paths are spelled or linked:
    writing it would destroy them."""
    protected: list[tuple[str, str]] = []
    if input_path is not None:
        protected.append(("the input file", os.fspath(input_path)))
    if outbox is not None:
        path = os.fspath(outbox if isinstance(outbox, str | os.PathLike) else outbox._label)
        if not _NOT_A_FILE.match(path):
            # SQLite keeps the -wal and -shm of a database opened through a symbolic link beside its target.
            real = os.path.realpath(path)
            protected += [("the outbox", name + suffix) for name in (path, real) for suffix in _OUTBOX_FILES]
    for what, path in protected:
        if _same_file(errors, path):
            raise ValueError(
                f"the errors file {os.fspath(errors)!r} is {what}: writing the errors would destroy it; "
                "name another file"
            )


def _same_file(path: str | os.PathLike[str], other: str) -> bool:
    """Whether two paths name one file: the same device and inode (hard and symbolic links) when both exist,
    else the same path once links, `.` and `..` are resolved."""
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(path) == os.path.realpath(other)


class ErrorsFile:
    """The `errors` CSV: one line per invalid or failed row (`line`, `type`, `error`).

    Written to a temporary file beside it, renamed over it when the run ends: a run that raises (a malformed
    line, Ctrl-C twice) or is killed never leaves it half-written; the previous one stays. A stream (a pipe, a
    terminal, `/dev/stderr` even when standard error goes to a file) is written to as the run goes.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.temporary: str | None = None
        self.target = ""
        try:
            found: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            found = None
        if found is not None and (not stat.S_ISREG(found.st_mode) or _is_standard_output(found)):
            # Appended to: a log that standard error goes to keeps what it holds.
            self.file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed by __exit__
        else:
            if found is not None and not os.access(path, os.W_OK):  # a rename would replace it all the same
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            # Through a symbolic link: the file it points to is replaced, the link kept.
            self.target = os.path.realpath(path)
            folder, name = os.path.split(self.target)
            self.temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
            try:  # mode 0o666 less the umask, as open() creates a file; an existing file's own mode is kept
                descriptor = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except OSError as exc:  # said of the file asked for, not of the temporary one
                raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
            if found is not None:
                os.fchmod(descriptor, stat.S_IMODE(found.st_mode))
            self.file = open(descriptor, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by __exit__
        self.writer = csv.writer(self.file)
        self.writer.writerow(["line", "type", "error"])

    def __enter__(self) -> ErrorsFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if self.temporary is None:
            self.file.close()
            return
        try:
            if exc_type is None:
                self.file.flush()
                os.fsync(self.file.fileno())  # on disk before the rename: no empty file after a power cut
            self.file.close()
            if exc_type is None:
                os.replace(self.temporary, self.target)
        finally:
            if os.path.lexists(self.temporary):
                os.unlink(self.temporary)

    def write(self, problem: RowProblem) -> None:
        self.writer.writerow(["" if problem.line is None else problem.line, problem.type, problem.error])

    def write_failed(self, failed: list[FailedEvent], lines: Mapping[str, int]) -> None:
        """The outbox's failed events, each with the line of its row (`lines`: by idempotency key) where known."""
        for event in failed:
            result = event.result
            self.write(RowProblem(lines.get(event.idempotency_key), result["type"], result["error"]))


def _is_standard_output(found: os.stat_result) -> bool:
    """Whether `found` is the file standard output or error goes to (`--errors /dev/stderr 2>>import.log`): a
    stream to add to, not a file to replace."""
    for descriptor in (1, 2):
        try:
            stream = os.fstat(descriptor)
        except OSError:  # closed
            continue
        if (stream.st_dev, stream.st_ino) == (found.st_dev, found.st_ino):
            return True
    return False
