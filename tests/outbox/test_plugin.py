"""The `cms_outbox` fixture, used as an SDK user would: no import, no conftest.py."""

from __future__ import annotations

import pytest

from cms_python import Outbox
from cms_python.testing import Sandbox

pytest_plugins = ["pytester"]


def checkout(outbox: Outbox, user_id: str, order_id: str, cents: int) -> bool:
    """An application's checkout: the sale is queued, delivered in the background."""
    result = outbox.track_sale(
        click_id="id_123",
        event_name="purchase_completed",
        customer_external_id=user_id,
        invoice_id=order_id,
        amount=cents,
        currency="USD",
    )
    return result["success"]


def test_queued_events_reach_the_sandbox_once_flushed(cms_outbox: Outbox, cms_sandbox: Sandbox) -> None:
    assert checkout(cms_outbox, "user_42", "order_1", 4999)
    assert cms_outbox.flush(timeout=5)
    assert [(sale.invoice_id, sale.amount) for sale in cms_sandbox.sales] == [("order_1", 4999)]


def test_the_fixture_delivers_what_is_left_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def sandbox_after(cms_sandbox):
            yield cms_sandbox
            assert len(cms_sandbox.leads) == 20  # after cms_outbox's teardown, which ran first

        def test_queues_without_flushing(sandbox_after, cms_outbox):
            for number in range(20):
                cms_outbox.track_lead(click_id="c", event_name="e", customer_external_id=f"u{number}")
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
