"""The outbox with real processes: kill -9, two processes on one file, fork, delivery at interpreter exit.

The processes run `tests/outbox/child.py` against a loopback server in this process; the server records every
request with its Idempotency-Key.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from cms_python._outbox.outbox import open_store
from cms_python._outbox.store import LEASE

from ..support.servers import LoopbackServer, Reply
from .child import EVENTS, TOKEN
from .conftest import Child, finish, summary

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork and POSIX signals")


def received(server: LoopbackServer) -> dict[str, list[bytes]]:
    """Idempotency-Key -> the bodies received whole under it (a process killed while sending leaves a request
    cut short, which an API refuses)."""
    bodies: defaultdict[str, list[bytes]] = defaultdict(list)
    for request in server.requests:
        headers = {name.lower(): value for name, value in request.headers.items()}
        if len(request.body) == int(headers["content-length"]):
            bodies[headers["idempotency-key"]].append(request.body)
    return bodies


def pending_in(target: str | Path) -> int:
    store = open_store(target, durability=None, lease=LEASE, scope=None)
    try:
        return store.counts()["pending"]
    finally:
        store.close()


def test_kill_9_loses_no_acknowledged_event(
    server: LoopbackServer, new_target: Callable[[], str], child: Child
) -> None:
    path = new_target()
    server.default = Reply(delay=0.01)  # a slow API: events pile up, and kills land during delivery too
    seed = random.randrange(1 << 30)
    chance = random.Random(seed)
    acknowledged: set[int] = set()
    start = 0
    for _ in range(4):
        process = child("kill-target", path, server.url, str(start))
        lines: list[str] = []
        reader = threading.Thread(target=lambda p=process, out=lines: out.extend(p.stdout or ()))
        reader.start()
        while not lines and process.poll() is None:  # started and enqueueing
            time.sleep(0.01)
        time.sleep(chance.uniform(0.05, 0.6))
        process.send_signal(signal.SIGKILL)
        process.wait()
        reader.join()
        assert process.stdout is not None
        process.stdout.close()
        indexes = [int(line) for line in lines]
        acknowledged.update(indexes)
        # The next round starts at the first event not acknowledged: it may have been stored before the kill,
        # and is then recognised by its idempotency key.
        start = max(indexes, default=start - 1) + 1
    assert start < EVENTS, "every round enqueued everything: kill earlier"
    server.default = Reply()
    # A fresh process: enqueues the rest, delivers what the killed ones left (their claims are freed at once).
    outcome = summary(child("enqueue-and-flush", path, server.url, str(start), str(EVENTS)))
    assert outcome["flushed"] is True
    assert (outcome["pending"], outcome["failed"]) == (0, 0)

    bodies = received(server)
    missing = [index for index in sorted(acknowledged) if f"key-{index}" not in bodies]
    assert not missing, f"acknowledged but never received (seed {seed}): {missing[:10]}"
    assert all(f"key-{index}" in bodies for index in range(EVENTS))
    duplicates = {key: sent for key, sent in bodies.items() if len(sent) > 1}
    for key, sent in duplicates.items():
        assert len(set(sent)) == 1, f"{key} was sent with different bodies"  # same invoice, same timestamp
    print(f"kill -9: {len(acknowledged)} acknowledged before kills, {len(duplicates)} sent twice or more (seed {seed})")


def test_two_processes_on_one_target_send_each_event_once(
    server: LoopbackServer, new_target: Callable[[], str], child: Child
) -> None:
    path = new_target()
    server.default = Reply(delay=0.001)
    first = child("enqueue-and-flush", path, server.url, "0", "1000")
    second = child("enqueue-and-flush", path, server.url, "1000", "2000")
    for process in (first, second):
        assert summary(process)["flushed"] is True
    counts = Counter({key: len(sent) for key, sent in received(server).items()})
    assert len(counts) == 2000
    assert set(counts.values()) == {1}
    assert pending_in(path) == 0


@pytest.mark.parametrize("where", ["target", "memory"])
def test_fork_gives_the_child_its_own_outbox_and_no_event_is_sent_twice(
    server: LoopbackServer, new_target: Callable[[], str], where: str, child: Child
) -> None:
    path = new_target() if where == "target" else ":memory:"
    server.default = Reply(delay=0.002)  # the parent is still delivering when it forks
    lines = finish(child("fork", path, server.url))
    (child_start,) = [json.loads(line) for line in lines if line.startswith('{"child_pending_at_start"')]
    if where == "memory":  # the parent's queue stays the parent's
        assert child_start == {"child_pending_at_start": 0}
    outcome = json.loads(lines[-1])
    assert outcome["flushed"] is True
    assert outcome["child_status"] == 0  # the child flushed its events through its own connection and thread
    counts = Counter({key: len(sent) for key, sent in received(server).items()})
    assert sorted(counts) == sorted(f"key-{index}" for index in range(150))
    assert set(counts.values()) == {1}


def test_an_event_queued_just_before_exit_is_delivered(
    server: LoopbackServer, new_target: Callable[[], str], child: Child
) -> None:
    path = new_target()
    assert finish(child("enqueue-and-exit", str(path), server.url, "5")) == ["0"]
    assert list(received(server)) == ["key-0"]
    assert pending_in(path) == 0


def test_exit_waits_at_most_flush_on_exit_and_the_next_process_delivers(
    server: LoopbackServer, new_target: Callable[[], str], child: Child
) -> None:
    path = new_target()
    server.default = Reply(delay=30)  # the API hangs
    # communicate()'s timeout fails the test if the exit is not bounded (30 s delay, 10 s read timeout).
    assert finish(child("enqueue-and-exit", str(path), server.url, "0.5"), timeout=8) == ["0"]
    assert pending_in(path) == 1  # the event stays in the file, claimed by a process that is gone
    server.default = Reply()
    assert summary(child("enqueue-and-flush", str(path), server.url, "0", "0"), timeout=60)["flushed"] is True
    assert pending_in(path) == 0


def test_the_token_is_not_in_the_file(server: LoopbackServer, tmp_path: Path, child: Child) -> None:
    path = tmp_path / "outbox.sqlite3"
    finish(child("enqueue-and-flush", str(path), server.url, "0", "20"))
    files = [file for file in tmp_path.iterdir() if file.name.startswith("outbox.sqlite3")]
    assert files
    for file in files:
        content = file.read_bytes()
        assert TOKEN.encode() not in content
        assert server.url.encode() not in content


def test_a_batch_slower_than_the_lease_is_not_taken_over(
    server: LoopbackServer, new_target: Callable[[], str], child: Child
) -> None:
    # Each answer takes 0.12 s; a batch of 32 takes ~4 s, longer than the 3 s lease, which its owner must renew:
    # a second process on the file must not send any of the batch's events meanwhile. (Answers well within the
    # child's 0.25 s read timeout: an attempt timed out is sent again, and the key counted twice.)
    path = new_target()
    server.default = Reply(delay=0.12)
    owner = child("slow-batch", path, server.url, "32")
    assert owner.stdout is not None
    assert owner.stdout.readline().strip() == "claimed"
    other = child("enqueue-and-flush", path, server.url, "0", "0")
    for process in (owner, other):
        assert summary(process, timeout=60)["flushed"] is True
    counts = Counter({key: len(sent) for key, sent in received(server).items()})
    assert sorted(counts) == sorted(f"key-{index}" for index in range(32))
    assert set(counts.values()) == {1}, counts
