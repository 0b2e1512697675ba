"""`Attempts.decide`: wait and retry, done, or gave up — retryable or permanent. Pure: no server needed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from cms_api_client.types import Response

from cms_python import _retry
from cms_python._attempts import Attempts, Done, GaveUp, Wait
from cms_python._requests import build_lead

from ..conftest import LEAD, TOKEN


def response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(status_code=status, content=body, headers=headers or {}, parsed=None)


def attempts(max_retries: int) -> Attempts:
    request = build_lead(**LEAD)
    assert not isinstance(request, dict)
    return Attempts(request, max_retries=max_retries, token=TOKEN)


def decide(outcome: Any, max_retries: int = 0) -> Any:
    tries = attempts(max_retries)
    tries.start()
    return tries.decide(outcome)


def test_success_is_done():
    decision = decide(response(204))
    assert isinstance(decision, Done)
    assert decision.result["success"] is True


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_wait_then_give_up_retryable(status):
    assert isinstance(decide(response(status), max_retries=1), Wait)
    decision = decide(response(status), max_retries=0)
    assert isinstance(decision, GaveUp)
    assert decision.retryable
    assert decision.result["status_code"] == status


@pytest.mark.parametrize(
    "outcome",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("hung up")],
    ids=["connect", "timeout", "dropped"],
)
def test_network_failures_give_up_retryable(outcome):
    decision = decide(outcome)
    assert isinstance(decision, GaveUp)
    assert decision.retryable
    assert decision.result["status_code"] is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_client_errors_are_permanent(status):
    decision = decide(response(status), max_retries=2)
    assert isinstance(decision, GaveUp)
    assert not decision.retryable


def test_an_invalid_response_is_permanent():
    decision = decide(response(200, b"<html>", {"content-type": "text/html"}), max_retries=2)
    assert isinstance(decision, GaveUp)
    assert not decision.retryable
    assert decision.result["type"] == "invalid_response"


def test_a_retry_after_over_the_cap_gives_up_retryable_with_the_requested_wait():
    wait = _retry.MAX_RETRY_AFTER + 1
    decision = decide(response(503, headers={"retry-after": str(int(wait))}), max_retries=2)
    assert isinstance(decision, GaveUp)
    assert decision.retryable
    assert decision.retry_after == wait


def test_retry_after_is_followed_and_reported():
    assert decide(response(429, headers={"retry-after": "3"}), max_retries=1) == Wait(3.0)
    decision = decide(response(429, headers={"retry-after": "3"}), max_retries=0)
    assert isinstance(decision, GaveUp)
    assert decision.retry_after == 3.0


def test_retries_stop_after_max_retries():
    tries = attempts(max_retries=2)
    decisions = []
    for _ in range(3):
        tries.start()
        decisions.append(tries.decide(response(503)))
    assert [type(decision) for decision in decisions] == [Wait, Wait, GaveUp]
