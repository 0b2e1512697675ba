"""`cms demo`: the documented journey against an in-process sandbox, for a first look (no token, no network)."""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

from ..testing import Sandbox
from ..testing._summary import summary
from .arguments import add_command
from .output import strict_json, write


def register(commands: Any) -> None:
    """Add `cms demo`."""
    add_command(
        commands,
        "demo",
        "Walk through the documented journey against an in-process sandbox (no token, no network).",
        """\
It tracks a standard lead, a deferred lead and a follow-up event without click id, a sale attributed through
the deferred association, a sale with a click id, a retried sale that is recorded once, and a lead that breaks
the deferred rule; then prints what the sandbox recorded and which click each event was attributed to.

example:
  cms demo
""",
        _demo,
    )


_USER_42 = {"customer_external_id": "user_42"}
_USER_77 = {"customer_external_id": "user_77"}
_FIRST_SALE = {
    "event_name": "purchase_completed",
    **_USER_77,
    "invoice_id": "inv_1001",
    "amount": 4999,
    "currency": "USD",
}
#: The demo's steps: what each shows, the client method, its keyword arguments.
_JOURNEY: list[tuple[str, str, dict[str, Any]]] = [
    (
        "Standard lead: the click id comes with the event",
        "track_lead",
        {"click_id": "click_A", "event_name": "signup_started", **_USER_42},
    ),
    (
        "Deferred lead: store the click for the customer",
        "track_lead",
        {"click_id": "click_B", "event_name": "lead_captured", **_USER_77, "mode": "deferred"},
    ),
    (
        "Follow-up event without click id: resolved through the deferred association",
        "track_lead",
        {"event_name": "email_verified", **_USER_77},
    ),
    ("Sale without click id: attributed to the deferred lead's click", "track_sale", _FIRST_SALE),
    (
        "Sale with a click id",
        "track_sale",
        {"click_id": "click_A", "event_name": "purchase_completed", **_USER_42, "invoice_id": "inv_1002"}
        | {"amount": 1999, "currency": "USD"},
    ),
    ("The first sale sent again, as a retry would: recorded once, answered as a replay", "track_sale", _FIRST_SALE),
    (
        "What not to do: a click id again after a deferred lead (a result dict, not an exception)",
        "track_lead",
        {"click_id": "click_C", "event_name": "kyc_completed", **_USER_77},
    ),
]


def _demo(_: argparse.Namespace) -> int:
    sandbox = Sandbox()
    write("CutMeShort demo: the documented journey, against an in-process sandbox (nothing leaves this process).")
    with sandbox.client() as client:
        for number, (title, method, kwargs) in enumerate(_JOURNEY, 1):
            arguments = ", ".join(f"{name}={json.dumps(value)}" for name, value in kwargs.items())
            write(f"\n{number}. {title}\n   client.{method}({arguments})")
            result = getattr(client, method)(**kwargs)
            write(textwrap.indent(strict_json(result), "   "))
    write("")
    write(summary(sandbox))
    return 0
