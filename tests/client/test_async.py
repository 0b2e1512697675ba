"""AsyncCMSClient specifics: concurrency, cancellation, closing, warnings, and parity with the sync face."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import warnings

import httpx
import pytest

from cms_python import AsyncCMSClient, CMSClient, _retry
from cms_python._base import MAX_IN_FLIGHT

from ..conftest import LEAD, SALE, TOKEN, key_of
from ..support.servers import SUCCESS, Reply
from ..support.waits import wait_until_async


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- concurrency ----------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_500_concurrent_calls_each_arrive_once(server):
    async with AsyncCMSClient(token=TOKEN, host=server.url) as client:
        results = await asyncio.gather(
            *(
                client.track_lead(click_id=f"c{i}", event_name="signup", customer_external_id=f"user_{i}")
                for i in range(500)
            )
        )
    assert results == [SUCCESS] * 500
    assert len(server.requests) == 500
    ids = [r.json["customerExternalId"] for r in server.requests]
    assert sorted(ids) == sorted(f"user_{i}" for i in range(500))
    keys = {key_of(r) for r in server.requests}
    assert len(keys) == 500
    # Each request's body and key belong together (no mix-up between concurrent calls).
    assert all(r.json["clickId"] == "c" + r.json["customerExternalId"].removeprefix("user_") for r in server.requests)


@pytest.mark.anyio
async def test_concurrent_calls_with_retries_keep_their_own_keys(server):
    # 20 failures spread over the calls' attempts: each retry must reuse its own call's key, never another's.
    server.queue(*[Reply(status=503, body=b"")] * 20)
    async with AsyncCMSClient(token=TOKEN, host=server.url, max_retries=20) as client:
        results = await asyncio.gather(
            *(
                client.track_lead(event_name="e", customer_external_id=f"u{i}", idempotency_key=f"k-{i}")
                for i in range(20)
            )
        )
    assert results == [SUCCESS] * 20
    assert len(server.requests) == 40
    for recorded in server.requests:
        assert key_of(recorded) == "k-" + recorded.json["customerExternalId"].removeprefix("u")
    assert {key_of(r) for r in server.requests} == {f"k-{i}" for i in range(20)}


# --- cancellation ---------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancelled_call_raises_cancelled_error_and_client_stays_usable(server):
    server.queue(Reply(delay=0.5))
    async with AsyncCMSClient(token=TOKEN, host=server.url, timeout=5) as client:
        task = asyncio.create_task(client.track_lead(**LEAD))
        await wait_until_async(lambda: len(server.requests) >= 1, what="the first request")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await client.track_lead(**LEAD) == SUCCESS
    assert len(server.requests) == 2
    # The cancelled call was not retried behind the caller's back.
    await asyncio.sleep(0.05)
    assert len(server.requests) == 2


@pytest.mark.anyio
async def test_wait_for_timeout_cancels_the_call_and_client_stays_usable(server):
    server.queue(Reply(delay=10))
    async with AsyncCMSClient(token=TOKEN, host=server.url, timeout=30) as client:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):  # not yet the builtin TimeoutError on Python 3.10
            await asyncio.wait_for(client.track_lead(**LEAD), timeout=0.1)
        assert time.monotonic() - started < 5  # cancelled at the caller's 0.1 s, not after the server's 10 s
        assert await client.track_lead(**LEAD) == SUCCESS
    assert len(server.requests) == 2


@pytest.mark.anyio
async def test_cancelled_during_backoff_sends_no_more_attempts(server, monkeypatch):
    monkeypatch.setattr(_retry, "INITIAL_DELAY", 30.0)
    server.queue(Reply(status=503, body=b""))
    async with AsyncCMSClient(token=TOKEN, host=server.url) as client:
        task = asyncio.create_task(client.track_lead(**LEAD))
        await wait_until_async(lambda: len(server.requests) >= 1, what="the first request")
        await asyncio.sleep(0.1)  # now sleeping before the retry
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 10  # at once, not after the 30 s backoff
        monkeypatch.setattr(_retry, "INITIAL_DELAY", 0.01)
        assert await client.track_lead(**LEAD) == SUCCESS
    assert len(server.requests) == 2


@pytest.mark.anyio
async def test_cancelling_some_of_many_concurrent_calls(server):
    # Some of the cancelled calls are in flight, the others still wait for a slot. The calls in flight are answered
    # late enough that none has its answer (and frees its slot to a call that was to be cancelled waiting) before
    # the cancellations: with 0.2 s, the last slot's request came up to 0.1 s after the first on a busy machine.
    server.queue(*[Reply(delay=2.0)] * MAX_IN_FLIGHT)
    calls = MAX_IN_FLIGHT + 8
    async with AsyncCMSClient(token=TOKEN, host=server.url) as client:
        tasks = [
            asyncio.create_task(client.track_lead(event_name="e", customer_external_id=f"u{i}")) for i in range(calls)
        ]
        await wait_until_async(lambda: len(server.requests) >= MAX_IN_FLIGHT, what="every slot's request")
        for task in tasks[::2]:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes[::2])
    assert outcomes[1::2] == [SUCCESS] * (calls // 2)
    # The calls cancelled while waiting for a slot never sent.
    assert len(server.requests) == MAX_IN_FLIGHT + 4


# --- event loops ------------------------------------------------------------------------------------------------

WRONG_LOOP = "belongs to the event loop it was first used in"


def test_calls_from_another_loop_raise_before_sending_every_time_and_the_first_loop_keeps_working(server):
    first = asyncio.new_event_loop()
    client = AsyncCMSClient(token=TOKEN, host=server.url)
    try:
        assert first.run_until_complete(client.track_lead(**LEAD)) == SUCCESS
        for _ in range(3):  # not only the first call from the new loop: each one
            with pytest.raises(RuntimeError, match=WRONG_LOOP):
                asyncio.run(client.track_lead(**LEAD))
        with pytest.raises(RuntimeError, match=WRONG_LOOP):
            asyncio.run(client.track_sale(**SALE))
        assert len(server.requests) == 1
        assert first.run_until_complete(client.track_lead(**LEAD)) == SUCCESS
    finally:
        first.run_until_complete(client.aclose())
        first.close()
    assert len(server.requests) == 2


def test_a_closed_first_loop_is_named_in_the_error(server):
    client = AsyncCMSClient(token=TOKEN, host=server.url)

    async def use_and_close() -> None:
        assert await client.track_lead(**LEAD) == SUCCESS
        await client.aclose()

    asyncio.run(use_and_close())
    with pytest.raises(RuntimeError, match=r"first used in \(closed\)"):
        asyncio.run(client.track_lead(**LEAD))
    assert len(server.requests) == 1


def test_two_loops_in_two_threads_at_once(server):
    # Both make their first call at the same moment: one loop gets the client, the other a RuntimeError for each
    # of its calls, and nothing it asked for is sent.
    server.default = Reply(delay=0.01)
    client = AsyncCMSClient(token=TOKEN, host=server.url)
    start = threading.Barrier(2)
    outcomes: dict[str, list[object]] = {}

    def run_loop(name: str) -> None:
        async def calls() -> list[object]:
            start.wait()
            results = await asyncio.gather(
                *(client.track_lead(**LEAD, idempotency_key=f"{name}-{i}") for i in range(20)), return_exceptions=True
            )
            if results == [SUCCESS] * 20:  # the loop the client belongs to closes it
                await client.aclose()
            return results

        outcomes[name] = asyncio.run(calls())

    threads = [threading.Thread(target=run_loop, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (winner,) = [name for name, results in outcomes.items() if results == [SUCCESS] * 20]
    (loser,) = set(outcomes) - {winner}
    assert all(isinstance(result, RuntimeError) and WRONG_LOOP in str(result) for result in outcomes[loser])
    assert sorted(key_of(recorded) for recorded in server.requests) == sorted(f"{winner}-{i}" for i in range(20))


# --- closing ----------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_with_closes_the_client(server):
    async with AsyncCMSClient(token=TOKEN, host=server.url) as client:
        assert await client.track_lead(**LEAD) == SUCCESS
        httpx_client = client._api.get_async_httpx_client()
        assert not httpx_client.is_closed
    assert httpx_client.is_closed


@pytest.mark.anyio
async def test_async_with_closes_on_error_too(server):
    client = AsyncCMSClient(token=TOKEN, host=server.url)

    async def fail_inside() -> None:
        async with client:
            await client.track_lead(**LEAD)
            raise KeyError("boom")

    with pytest.raises(KeyError):
        await fail_inside()
    assert client._api.get_async_httpx_client().is_closed


@pytest.mark.anyio
async def test_aclose_leaves_the_callers_http_client_open(server):
    async with httpx.AsyncClient() as own:
        async with AsyncCMSClient(token=TOKEN, host=server.url, http_client=own) as client:
            assert await client.track_lead(**LEAD) == SUCCESS
        assert not own.is_closed
        assert (await own.get(server.url + "/ping")).status_code == 200


def run_and_collect(scenario) -> list[str]:
    """Run `scenario` (an async function) in a fresh loop, close it, collect garbage; return every warning and
    unraisable exception seen ("Event loop is closed", unclosed transports, ResourceWarning, ...)."""
    problems: list[str] = []
    original_hook = sys.unraisablehook

    def hook(unraisable) -> None:
        problems.append(f"unraisable: {unraisable.exc_type.__name__}: {unraisable.exc_value} in {unraisable.object!r}")

    sys.unraisablehook = hook
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            asyncio.run(scenario())
            for _ in range(3):
                gc.collect()
        problems += [f"{w.category.__name__}: {w.message}" for w in caught]
    finally:
        sys.unraisablehook = original_hook
    return problems


def test_the_warning_check_sees_an_unclosed_client(server):
    async def scenario() -> None:
        client = AsyncCMSClient(token=TOKEN, host=server.url)
        assert await client.track_lead(**LEAD) == SUCCESS

    assert any("ResourceWarning: unclosed" in problem for problem in run_and_collect(scenario))


def test_no_warnings_after_use_and_close(server):
    server.queue(Reply(status=503), Reply(action="drop"), Reply(), Reply(delay=0.3))

    async def scenario() -> None:
        async with AsyncCMSClient(token=TOKEN, host=server.url, timeout=0.2) as client:
            assert await client.track_lead(**LEAD) == SUCCESS  # 503, drop, then success
            assert (await client.track_lead(**LEAD))["success"] is True  # timeout, then success
            await asyncio.gather(*(client.track_lead(**LEAD) for _ in range(30)))

    assert run_and_collect(scenario) == []


def test_no_warnings_after_cancellation_and_aclose(server):
    server.queue(Reply(delay=0.3))

    async def scenario() -> None:
        client = AsyncCMSClient(token=TOKEN, host=server.url)
        task = asyncio.create_task(client.track_lead(**LEAD))
        await wait_until_async(lambda: len(server.requests) >= 1, what="the first request")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()

    assert run_and_collect(scenario) == []


# --- the sync and async faces agree -------------------------------------------------------------------------------

REPLIES = {
    "success-seed": Reply(),
    "success-reference": Reply(body={"success": True, "timestamp": "2024-01-01T00:00:00Z"}),
    "success-published": Reply(body={"status": True, "data": "ok"}),
    "success-empty": Reply(body=b""),
    "204": Reply(status=204, body=b""),
    "2xx-false": Reply(body={"success": False, "error": "nope"}),
    "200-html": Reply(body=b"<html>ok</html>"),
    "200-malformed": Reply(body=b'{"success": tru', headers={"Content-Type": "application/json"}),
    "400-json": Reply(status=400, body={"success": False, "error": "Bad", "type": "bad_request", "details": {"a": 1}}),
    "401-empty": Reply(status=401, body=b""),
    "404-html": Reply(status=404, body=b"<html>not found</html>"),
    "409-json": Reply(status=409, body={"error": "Duplicate", "statusCode": 409}),
    "418": Reply(status=418, body=b""),
    "422-json": Reply(status=422, body={"success": False, "error": "Validation failed", "type": "validation"}),
    "429-retry-after": Reply(status=429, body={"error": "slow"}, headers={"Retry-After": "0"}),
    "500-html": Reply(status=500, body=b"<h1>oops</h1>"),
    "503-empty": Reply(status=503, body=b""),
    "302": Reply(status=302, body=b"", headers={"Location": "https://elsewhere.example/"}),
    "drop": Reply(action="drop"),
    "truncate": Reply(action="truncate"),
    "timeout": Reply(delay=0.3),
}


@pytest.mark.parametrize("name", list(REPLIES))
def test_sync_and_async_faces_give_identical_results(server, name):
    server.default = REPLIES[name]
    with CMSClient(token=TOKEN, host=server.url, timeout=0.2, max_retries=1) as sync_client:
        sync_result = sync_client.track_lead(**LEAD)
    sync_requests = len(server.requests)

    async def run_async():
        async with AsyncCMSClient(token=TOKEN, host=server.url, timeout=0.2, max_retries=1) as async_client:
            return await async_client.track_lead(**LEAD)

    async_result = asyncio.run(run_async())
    assert async_result == sync_result
    assert len(server.requests) == 2 * sync_requests
    assert sync_requests in (1, 2)
    # Validation is shared too.
    invalid = {**LEAD, "customer_email": "nope"}
    with CMSClient(token=TOKEN, host=server.url) as sync_client:
        sync_invalid = sync_client.track_lead(**invalid)
    assert asyncio.run(_async_call(server.url, invalid)) == sync_invalid


async def _async_call(host: str, kwargs: dict) -> dict:
    async with AsyncCMSClient(token=TOKEN, host=host) as client:
        return await client.track_lead(**kwargs)
