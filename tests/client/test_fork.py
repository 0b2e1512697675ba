"""A client made before `os.fork()` (gunicorn --preload, multiprocessing, Celery prefork) works in every process:
each child opens connections of its own, its first call succeeds, and no event is lost."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

import pytest

from cms_python import CMSClient, _redaction

from ..conftest import LEAD, key_of
from ..support.processes import fork

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="this platform does not fork")

CHILDREN = 4


def call_in_child(face: Any, client: Any, writer: int) -> None:
    """In a forked child: one call, its result as a JSON line on `writer`, then exit without pytest's teardown."""
    status = 1
    try:
        # A fresh event loop: the parent's cannot be used in a child.
        result = asyncio.run(client.raw.track_lead(**LEAD)) if face.kind == "async" else client.track_lead(**LEAD)
        os.write(writer, (json.dumps(result) + "\n").encode())
        status = 0
    finally:
        os._exit(status)


def test_every_forked_child_has_connections_of_its_own_and_loses_nothing(face, server):
    client = face.client(host=server.url, max_retries=0)  # no retries: a failed first call is a lost event
    assert client.track_lead(**LEAD)["success"] is True  # the parent now holds a pooled connection
    reader, writer = os.pipe()
    children = []
    for _ in range(CHILDREN):
        pid = fork()
        if pid == 0:
            call_in_child(face, client, writer)
        children.append(pid)
    os.close(writer)
    with os.fdopen(reader) as lines:
        results = [json.loads(line) for line in lines]
    assert [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children] == [0] * CHILDREN
    assert client.track_lead(**LEAD)["success"] is True  # the parent's connection is still its own

    assert [result["success"] for result in results] == [True] * CHILDREN
    assert len(server.requests) == CHILDREN + 2
    assert len({key_of(request) for request in server.requests}) == CHILDREN + 2
    first, *from_children, last = (request.port for request in server.requests)
    assert last == first
    assert first not in from_children
    assert len(set(from_children)) == CHILDREN


@pytest.mark.parametrize("lock", ["registry", "pattern"])
def test_a_fork_while_another_thread_holds_a_redaction_lock_leaves_the_child_working(lock: str) -> None:
    token = f"fork-token-{lock}-0123456789"
    keep = CMSClient(token=token)  # the token is looked for in library records: its pattern is cached
    held = _redaction._lock if lock == "registry" else _redaction._secret(token)._pattern._lock
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with held:
            taken.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(10)
    threading.Timer(0.3, release.set).start()  # a fork handler may wait for it: it is released soon
    pid = fork()
    if pid == 0:
        status = 1
        try:
            with CMSClient(token=token) as client:
                assert _redaction.redact({"echo": token}, token) == {"echo": _redaction.REDACTED}
                assert client.track_lead(click_id="c", event_name="e", customer_external_id="u")["success"] is False
            status = 0
        finally:
            os._exit(status)
    release.set()
    holder.join()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the child hung on a lock its parent's thread held at the fork")
    assert os.waitstatus_to_exitcode(status) == 0
    keep.close()
