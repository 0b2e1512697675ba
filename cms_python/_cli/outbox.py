"""`cms outbox`: look into an outbox (a file, a PostgreSQL database), retry or purge its failed events, deliver it
in the foreground, or create a database's tables."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .._base import HOST_VARIABLE, TOKEN_VARIABLE
from .arguments import add_command, add_connection_options, client_from, rate
from .output import strict_json, write
from .signals import stop_on_signals

#: The outbox when no TARGET is given.
PATH_VARIABLE = "CMS_OUTBOX_PATH"  # the name of the web integrations' setting
_PROGRESS_EVERY = 0.5

SUMMARY = "Show, retry, purge or deliver the events of an Outbox (a file or a PostgreSQL database)."
EPILOG = f"""\
cms outbox [TARGET]                    print the counts: pending, failed, delivered (JSON)
cms outbox [TARGET] --failed           print each failed event with its last error (JSON lines)
cms outbox [TARGET] --retry-failed     queue the failed events again (the app's Outbox delivers them)
cms outbox [TARGET] --purge-failed     delete the failed events (asks first, unless --yes)
cms outbox deliver [TARGET] [--until-empty]
                                       deliver in the foreground (a sidecar, a cron job): until stopped,
                                       or until nothing is pending; a progress line on a terminal
cms outbox migrate URL                 create the outbox's tables in a PostgreSQL database (if missing)
cms outbox migrate --sql               print the SQL that creates them, for your own migration tool

TARGET is an outbox file or a postgresql:// URL; it defaults to ${PATH_VARIABLE}. A file is never created here:
a missing file is an error. In a database, the counts and failed events are those of every token using it.
`deliver` reads {TOKEN_VARIABLE} and {HOST_VARIABLE} (or --token, --host) and paces to --rate-limit requests per
minute, shared with the other processes delivering from the target with that token.
Exit status: 0 done, 1 not done (no such file, delivery paused by a 401/403), 2 bad usage.
"""


def register(commands: Any) -> None:
    """Add `cms outbox`."""
    parser = add_command(commands, "outbox", SUMMARY, EPILOG, run)
    parser.usage = "cms outbox [deliver | migrate] [TARGET] [options]"
    parser.add_argument("target", nargs="*", metavar="[deliver | migrate] TARGET", help=argparse.SUPPRESS)
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--failed", action="store_true", help="print the failed events as JSON lines")
    actions.add_argument("--retry-failed", action="store_true", help="queue the failed events again")
    actions.add_argument("--purge-failed", action="store_true", help="delete the failed events")
    parser.add_argument("--yes", action="store_true", help="--purge-failed without asking")
    parser.add_argument("--until-empty", action="store_true", help="deliver: stop once nothing is pending")
    add_connection_options(parser, what="deliver: ")
    parser.add_argument(
        "--rate-limit", type=rate, default=60.0, metavar="N", help="deliver: requests per minute, 0: no pacing (60)"
    )
    parser.add_argument("--sql", action="store_true", help="migrate: print the SQL instead of running it")


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    from .._outbox.store import StorageError  # noqa: PLC0415 - the outbox only for this command
    from .._outbox.targets import is_database_url, label  # noqa: PLC0415

    target: list[str] = list(args.target)
    action = target.pop(0) if target and target[0] in ("deliver", "migrate") else None
    if len(target) > 1:
        parser.error(f"one TARGET at most, got {len(target)}")
    if action == "migrate" and args.sql and not target:
        from .._outbox.postgres.sql import schema_sql  # noqa: PLC0415

        write(schema_sql())
        return 0
    path = target[0] if target else os.environ.get(PATH_VARIABLE)
    if not path:
        parser.error(f"no outbox: give TARGET or set {PATH_VARIABLE}")
    if action is not None and (args.failed or args.retry_failed or args.purge_failed):
        parser.error(f"{action} takes no --failed, --retry-failed or --purge-failed")
    if action != "deliver" and (args.until_empty or args.token or args.host):
        parser.error("--until-empty, --token and --host go with 'cms outbox deliver'")
    if args.sql and action != "migrate":
        parser.error("--sql goes with 'cms outbox migrate'")
    try:
        database = is_database_url(path)
    except ValueError as exc:
        parser.error(str(exc))
    if action == "migrate" and not database:
        parser.error("migrate creates the tables of a PostgreSQL outbox: give a postgresql:// URL")
    if not database and (not os.path.isfile(path) or not os.path.getsize(path)):  # an empty file would become one
        print(f"cms outbox: no outbox at {path}", file=sys.stderr)
        return 1
    try:
        if action == "migrate":
            return _migrate(path, label(path))
        return _deliver(args, path) if action == "deliver" else _inspect(args, path)
    # Not an outbox, newer, corrupt, unreachable, no driver; or refused while at work (a read-only user, a database
    # gone): the message says which, without a password.
    except (ValueError, OSError, ImportError, StorageError) as exc:
        print(f"cms outbox: {exc}", file=sys.stderr)
        return 1


def _inspect(args: argparse.Namespace, path: str) -> int:
    from .._outbox.outbox import open_store  # noqa: PLC0415
    from .._outbox.store import LEASE  # noqa: PLC0415 - the outbox only for this command

    store = open_store(path, durability=None, lease=LEASE, scope=None)
    try:
        if args.failed:
            from .._outbox.delivery import failed_event  # noqa: PLC0415

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
            print(f"{count} failed event(s) queued again; an Outbox on it (or 'cms outbox deliver') sends them")
        elif args.purge_failed:
            count = store.counts()["failed"]
            if count and not args.yes and not _confirm(f"Delete {count} failed event(s) from {store.label} for good?"):
                print("Nothing deleted.")
                return 1
            print(f"{store.purge_failed()} failed event(s) deleted")
        else:
            write(json.dumps(store.counts()))
    finally:
        store.close()
    return 0


def _migrate(url: str, shown: str) -> int:
    from .._outbox.outbox import open_store  # noqa: PLC0415
    from .._outbox.store import LEASE  # noqa: PLC0415 - the outbox only for this command

    open_store(url, durability=None, lease=LEASE, scope=None).close()  # creates the tables if they are missing
    print(f"The outbox's tables are in place in {shown}")
    return 0


def _deliver(args: argparse.Namespace, path: str) -> int:
    from .._outbox import Outbox, StorageError  # noqa: PLC0415 - sqlite3 and a thread only for this command

    # Before the outbox starts delivering: from its first request on, a signal stops it.
    with client_from(args) as client, stop_on_signals() as stop:
        outbox = Outbox(path, client=client, rate_limit=args.rate_limit or None, flush_on_exit=0)
        progress = _Progress(outbox.stats()["delivered"]) if sys.stderr.isatty() else None
        status = 0
        try:
            while not stop.is_set():
                flushed = outbox.flush(timeout=_PROGRESS_EVERY)
                try:
                    stats = outbox.stats()
                except StorageError:  # a database restarting, a file moved: the delivery thread waits (and logs)
                    stop.wait(_PROGRESS_EVERY)
                    continue
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
