"""The pytest plugin, used as an SDK user would: its fixtures need no import and no conftest.py."""

from __future__ import annotations

import asyncio

import pytest

from cms_python import AsyncCMSClient, CMSClient
from cms_python.testing import Sandbox

pytest_plugins = ["pytester"]


# -- "application code" under test ---------------------------------------------------------------------------


def complete_signup(client: CMSClient, user_id: str, click_id: str | None) -> bool:
    """An application's signup handler: a deferred lead when the user came from a click, then the verification."""
    if click_id is not None:
        client.track_lead(click_id=click_id, event_name="signup_started", customer_external_id=user_id, mode="deferred")
    return client.track_lead(event_name="email_verified", customer_external_id=user_id)["success"]


async def checkout(client: AsyncCMSClient, user_id: str, click_id: str, order_id: str, cents: int) -> bool:
    """An application's checkout: one sale per order."""
    result = await client.track_sale(
        click_id=click_id,
        event_name="purchase_completed",
        customer_external_id=user_id,
        invoice_id=order_id,
        amount=cents,
        currency="EUR",
    )
    return result["success"]


# -- the tests a user would write ----------------------------------------------------------------------------


def test_signup_is_attributed_to_the_click(cms_sandbox, cms_client):
    assert complete_signup(cms_client, "user_42", click_id="id_123") is True
    started, verified = cms_sandbox.leads
    assert (started.event_name, started.deferred) == ("signup_started", True)
    assert (verified.event_name, verified.click_id, verified.click_id_source) == (
        "email_verified",
        "id_123",
        "association",
    )
    assert cms_sandbox.attributions()["id_123"].leads == 2


def test_signup_without_a_click_is_not_tracked(cms_sandbox, cms_client):
    assert complete_signup(cms_client, "user_42", click_id=None) is False
    assert cms_sandbox.requests[0].status == 400
    assert cms_sandbox.leads == []


def test_checkout_survives_an_outage(cms_sandbox, cms_async_client):
    cms_sandbox.fail_next(503, retry_after=0)
    assert asyncio.run(checkout(cms_async_client, "user_42", "id_123", "order_1", 1999)) is True
    assert [request.status for request in cms_sandbox.requests] == [503, 200]
    assert [(sale.invoice_id, sale.amount, sale.currency) for sale in cms_sandbox.sales] == [("order_1", 1999, "EUR")]


def test_each_test_gets_a_fresh_sandbox(cms_sandbox):
    assert isinstance(cms_sandbox, Sandbox)
    assert cms_sandbox.requests == []


def test_the_plugin_is_registered_by_its_entry_point(request):
    plugin = request.config.pluginmanager.get_plugin("cms_python")
    assert plugin is not None
    assert plugin.__name__ == "cms_python.pytest_plugin"


def test_a_project_without_setup_gets_the_fixtures_and_can_override_the_sandbox(pytester: pytest.Pytester):
    pytester.makeconftest(
        """
        import pytest
        from cms_python.testing import Sandbox

        @pytest.fixture
        def cms_sandbox():
            return Sandbox(token="project-token")
        """
    )
    pytester.makepyfile(
        """
        def test_uses_the_overridden_sandbox(cms_sandbox, cms_client):
            assert cms_client.track_lead(click_id="c", event_name="e", customer_external_id="u")["success"]
            assert cms_sandbox.requests[0].headers["authorization"] == "Bearer project-token"
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
