"""`cms outbox`: look into an outbox file, retry or purge its failed events, or deliver it in the foreground."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ._base import HOST_VARIABLE, TOKEN_VARIABLE
from ._output import strict_json, write
from ._signals import stop_on_signals

#: The outbox file when no PATH is given.
PATH_VARIABLE = "CMS_OUTBOX_PATH"  # the name of the web integrations' setting
_PROGRESS_EVERY = 0.5

SUMMARY = "Show, retry, purge or deliver the events of an Outbox file."
EPILOG = f"""\
cms outbox [PATH]                      print the counts: pending, failed, delivered (JSON)
cms outbox [PATH] --failed             print each failed event with its last error (JSON lines)
cms outbox [PATH] --retry-failed       queue the failed events again (the app's Outbox delivers them)
cms outbox [PATH] --purge-failed       delete the failed events (asks first, unless --yes)
cms outbox deliver [PATH] [--until-empty]
                                       deliver in the foreground (a sidecar, a cron job): until stopped,
                                       or until nothing is pending; a progress line on a terminal

PATH defaults to ${PATH_VARIABLE}. The file is never created here: a missing file is an error. `deliver` reads
{TOKEN_VARIABLE} and {HOST_VARIABLE} (or --token, --host) and paces to --rate-limit requests per minute, shared
with the other processes delivering from the file.
Exit status: 0 done, 1 not done (no such file, delivery paused by a 401/403), 2 bad usage.
"""


def add_command(
    commands: Any,
    command: Callable[[Any, str, str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser],
) -> None:
    """Register `cms outbox` with the `cms` parser (`command` is `_cli._command`)."""
    parser = command(commands, "outbox", SUMMARY, EPILOG, run)
    parser.usage = "cms outbox [deliver] [PATH] [options]"
    parser.add_argument("target", nargs="*", metavar="[deliver] PATH", help=argparse.SUPPRESS)
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--failed", action="store_true", help="print the failed events as JSON lines")
    actions.add_argument("--retry-failed", action="store_true", help="queue the failed events again")
    actions.add_argument("--purge-failed", action="store_true", help="delete the failed events")
    parser.add_argument("--yes", action="store_true", help="--purge-failed without asking")
    parser.add_argument("--until-empty", action="store_true", help="deliver: stop once nothing is pending")
    parser.add_argument("--token", help=f"deliver: API token (default: ${TOKEN_VARIABLE})")
    parser.add_argument("--host", help=f"deliver: API base URL (default: ${HOST_VARIABLE}, else https://api.cme.sh)")
    parser.add_argument(
        "--rate-limit", type=float, default=60.0, metavar="N", help="deliver: requests per minute, 0: no pacing (60)"
    )


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    target: list[str] = list(args.target)
    deliver = bool(target) and target[0] == "deliver"
    if deliver:
        target.pop(0)
    if len(target) > 1:
        parser.error(f"one PATH at most, got {len(target)}")
    path = target[0] if target else os.environ.get(PATH_VARIABLE)
    if not path:
        parser.error(f"no outbox file: give PATH or set {PATH_VARIABLE}")
    if deliver and (args.failed or args.retry_failed or args.purge_failed):
        parser.error("deliver takes no --failed, --retry-failed or --purge-failed")
    if not deliver and (args.until_empty or args.token or args.host):
        parser.error("--until-empty, --token and --host go with 'cms outbox deliver'")
    if not os.path.isfile(path) or not os.path.getsize(path):  # an empty file would become an outbox
        print(f"cms outbox: no outbox at {path}", file=sys.stderr)
        return 1
    try:
        return _deliver(args, path) if deliver else _inspect(args, path)
    except (ValueError, OSError) as exc:  # not an outbox, newer, corrupt, unreadable
        print(f"cms outbox: {exc}", file=sys.stderr)
        return 1


def _inspect(args: argparse.Namespace, path: str) -> int:
    from ._outbox.store import LEASE  # noqa: PLC0415 - the outbox only for this command
    from ._outbox.targets import open_store  # noqa: PLC0415

    store = open_store(path, durability=None, lease=LEASE, scope=None)
    try:
        if args.failed:
            from ._outbox.delivery import failed_event  # noqa: PLC0415

            for stored in store.failed_events():
                event = failed_event(stored, json.loads(stored.result or "null"))
                line = {
                    "event_id": event.event_id,
                    "kind": event.kind,
                    "idempotency_key": event.idempotency_key,
                    "arguments": event.arguments,
                    "result": event.result,
                }
                write(strict_json(line, indent=None))
        elif args.retry_failed:
            count = store.retry_failed()
            print(f"{count} failed event(s) queued again; an Outbox on this file (or 'cms outbox deliver') sends them")
        elif args.purge_failed:
            count = store.counts()["failed"]
            if count and not args.yes and not _confirm(f"Delete {count} failed event(s) from {path} for good?"):
                print("Nothing deleted.")
                return 1
            print(f"{store.purge_failed()} failed event(s) deleted")
        else:
            write(json.dumps(store.counts()))
    finally:
        store.close()
    return 0


def _deliver(args: argparse.Namespace, path: str) -> int:
    from ._outbox import Outbox  # noqa: PLC0415 - sqlite3 and a thread only for this command

    token = args.token or os.environ.get(TOKEN_VARIABLE)
    if not token:
        args.parser.error(f"no API token: pass --token or set {TOKEN_VARIABLE}")
    # Before the outbox starts delivering: from its first request on, a signal stops it.
    with stop_on_signals() as stop:
        outbox = Outbox(path, token, args.host, rate_limit=args.rate_limit or None, flush_on_exit=0)
        progress = _Progress(outbox.stats()["delivered"]) if sys.stderr.isatty() else None
        status = 0
        try:
            while not stop.is_set():
                flushed = outbox.flush(timeout=_PROGRESS_EVERY)
                stats = outbox.stats()
                if progress is not None:
                    progress.show(stats)
                if stats["paused"]:
                    print("cms outbox: delivery paused: the API refused the token (401/403)", file=sys.stderr)
                    status = 1
                    break
                if flushed and args.until_empty:
                    break
                if flushed:  # nothing pending now: look again in a moment (an app may be queueing)
                    stop.wait(_PROGRESS_EVERY)
        except KeyboardInterrupt:  # a second signal: at once
            pass
        finally:
            if progress is not None:
                progress.end()
            outbox.close(timeout=0)
    return status


class _Progress:
    """One line on the terminal, rewritten in place."""

    def __init__(self, delivered_before: int | bool) -> None:
        self._before = int(delivered_before)
        self._started = time.monotonic()

    def show(self, stats: dict[str, int | bool]) -> None:
        delivered = int(stats["delivered"]) - self._before
        rate = delivered / max(time.monotonic() - self._started, 1e-9) * 60
        line = f"delivered {delivered} ({rate:.0f}/min), pending {stats['pending']}, failed {stats['failed']}"
        print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)

    def end(self) -> None:
        print(file=sys.stderr, flush=True)


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{question} Not on a terminal: pass --yes to confirm.", file=sys.stderr)
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
