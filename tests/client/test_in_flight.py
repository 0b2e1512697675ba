"""At most `MAX_IN_FLIGHT` requests in flight per client, on both faces: any number of concurrent calls completes
at the server's pace, waiting for a slot does not count against the timeout, and retry sleeps hold no slot."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

from cms_python import AsyncCMSClient, CMSClient
from cms_python._base import MAX_IN_FLIGHT

from ..conftest import TOKEN, key_of
from ..support import ROOT
from ..support.servers import SUCCESS, LoopbackServer, Reply
from ..support.waits import wait_until, wait_until_async

DELAY = 0.2  # the server answers each request this late


def assert_at_most_in_flight(server: LoopbackServer, limit: int, delay: float) -> None:
    """The server answers `delay` after a request arrives at the earliest. Had `limit` + 1 requests been in flight
    at once, one of them would have arrived less than `delay` after the one `limit` places before it: a
    causal check, which no slowness of the machine can fail."""
    arrivals = sorted(recorded.at for recorded in server.requests)
    assert len(arrivals) > limit
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[limit:], strict=False)]
    assert min(gaps) >= delay, f"{limit + 1} requests were in flight at once"


def lead(number: int) -> dict[str, str]:
    return {"event_name": "signup", "customer_external_id": f"user_{number}", "idempotency_key": f"key-{number}"}


def assert_each_arrived_once(server: LoopbackServer, calls: int) -> None:
    assert sorted(key_of(recorded) for recorded in server.requests) == sorted(f"key-{i}" for i in range(calls))


def test_a_gather_flood_completes_at_the_servers_pace(server):
    # 600 calls against replies 0.2 s late: httpx alone queues them in its pool, whose timeout (here 1 s, like
    # the others) runs out for many of them; the SDK lets MAX_IN_FLIGHT through at a time, the rest wait outside.
    server.default = Reply(delay=DELAY)
    calls = 600

    async def flood() -> list[dict[str, object]]:
        async with AsyncCMSClient(token=TOKEN, host=server.url, timeout=1.0, max_retries=0) as client:
            return await asyncio.gather(*(client.track_lead(**lead(i)) for i in range(calls)))

    assert asyncio.run(flood()) == [SUCCESS] * calls
    assert_each_arrived_once(server, calls)
    assert_at_most_in_flight(server, MAX_IN_FLIGHT, DELAY)


def test_threads_sharing_a_client_complete_at_the_servers_pace(server):
    server.default = Reply(delay=DELAY)
    calls = 6 * MAX_IN_FLIGHT
    client = CMSClient(token=TOKEN, host=server.url, timeout=0.5, max_retries=0)
    with client, ThreadPoolExecutor(max_workers=calls) as threads:
        results = list(threads.map(lambda number: client.track_lead(**lead(number)), range(calls)))
    assert results == [SUCCESS] * calls
    assert_each_arrived_once(server, calls)
    assert_at_most_in_flight(server, MAX_IN_FLIGHT, DELAY)


# A server asking every first attempt to come back later: with the slots held while sleeping, the extra call
# could only go out after the first retries; without, it goes out at once.
RETRY_LATER = Reply(status=503, body=b"", headers={"Retry-After": "1"})


def assert_the_extra_call_went_before_any_retry(server: LoopbackServer) -> None:
    keys = [key_of(recorded) for recorded in server.requests]
    assert len(keys) == 2 * MAX_IN_FLIGHT + 1
    first_retry = next(index for index, key in enumerate(keys) if keys.index(key) < index)
    assert keys.index("extra") < first_retry


def test_async_retry_sleeps_hold_no_slot(server):
    server.queue(*[RETRY_LATER] * MAX_IN_FLIGHT)

    async def scenario() -> list[dict[str, object]]:
        async with AsyncCMSClient(token=TOKEN, host=server.url) as client:
            sleepers = [asyncio.create_task(client.track_lead(**lead(i))) for i in range(MAX_IN_FLIGHT)]
            await wait_until_async(lambda: len(server.requests) >= MAX_IN_FLIGHT, what="every slot's request")
            extra = await client.track_lead(event_name="e", customer_external_id="u", idempotency_key="extra")
            return [extra, *await asyncio.gather(*sleepers)]

    assert asyncio.run(scenario()) == [SUCCESS] * (MAX_IN_FLIGHT + 1)
    assert_the_extra_call_went_before_any_retry(server)


def test_sync_retry_sleeps_hold_no_slot(server):
    server.queue(*[RETRY_LATER] * MAX_IN_FLIGHT)
    with CMSClient(token=TOKEN, host=server.url) as client, ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as threads:
        sleepers = [threads.submit(client.track_lead, **lead(i)) for i in range(MAX_IN_FLIGHT)]
        wait_until(lambda: len(server.requests) >= MAX_IN_FLIGHT, what="every slot's request")
        extra = client.track_lead(event_name="e", customer_external_id="u", idempotency_key="extra")
        results = [extra, *(sleeper.result() for sleeper in sleepers)]
    assert results == [SUCCESS] * (MAX_IN_FLIGHT + 1)
    assert_the_extra_call_went_before_any_retry(server)


def test_the_docs_state_the_bound():
    # Getting started (the client), Async (a gather) and Reliability (how long a call can take).
    pages = [
        (ROOT / "docs" / page).read_text(encoding="utf-8")
        for page in ("getting-started.md", "async.md", "reliability.md")
    ]
    stated = re.findall(
        r"at most (\d+)\s+requests in flight|(\d+) at a\s+time are in flight|client's (\d+) in-flight", "".join(pages)
    )
    assert len(stated) == 3
    assert {int(number) for match in stated for number in match if number} == {MAX_IN_FLIGHT}
