"""Test CutMeShort tracking without the network: `Sandbox`, an in-memory tracking API with the real one's rules.

    from cms_python.testing import Sandbox

    sandbox = Sandbox()
    with sandbox.client() as client:  # a CMSClient wired to the sandbox
        client.track_lead(click_id="id_123", event_name="signup_started", customer_external_id="user_42")
    assert sandbox.leads[0].click_id == "id_123"

With pytest, the `cms_sandbox`, `cms_client` and `cms_async_client` fixtures are there without any setup
(this package registers them as a pytest plugin). Your own `httpx.Client` can use `sandbox.transport()`;
other processes can use `sandbox.serve()` or `cms sandbox --port 8787`, a real HTTP server on 127.0.0.1.
Fault injection: `sandbox.fail_next(503)`, `sandbox.drop_next()`, `sandbox.delay_next(2.0)`.
"""

# One module per concern, none importing another in a loop: _records (what is answered and recorded), _faults,
# _schema (the spec's request checks), _rules (the API's rules, on _records and _schema), _transports and _server
# (the ways in), _sandbox (`Sandbox`: locking, faults, inspection, on all of these), _summary (what `cms` prints).
from ._records import Account, ClickSummary, Lead, RecordedRequest, Reply, Sale
from ._sandbox import SANDBOX_HOST, SANDBOX_TOKEN, Sandbox

__all__ = [
    "SANDBOX_HOST",
    "SANDBOX_TOKEN",
    "Account",
    "ClickSummary",
    "Lead",
    "RecordedRequest",
    "Reply",
    "Sale",
    "Sandbox",
]
