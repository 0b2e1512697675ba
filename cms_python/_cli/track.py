"""`cms track-lead` and `cms track-sale`: one event, tracked with the SDK's retries; the result dict printed as
JSON."""

from __future__ import annotations

import argparse
from typing import Any

from .._types import TrackResult
from .arguments import CONNECTION, add_command, add_connection_options, client_from, timestamp
from .output import strict_json, write

_RESULT = (
    CONNECTION
    + """ The result dict is printed as JSON.
Exit status: 0 tracked, 1 not tracked (the result says why), 2 bad usage (e.g. no token).
"""
)


def register(commands: Any) -> None:
    """Add `cms track-lead` and `cms track-sale`."""
    lead = add_command(
        commands,
        "track-lead",
        "Track a lead event (a signup, a verified email, ...).",
        """\
examples:
  cms track-lead --click-id id_123 --event-name signup_started --customer-external-id user_42
  # deferred attribution: the first call stores the click for the customer...
  cms track-lead --click-id id_123 --event-name lead_captured --customer-external-id user_42 --mode deferred
  # ...later calls leave the click id out
  cms track-lead --event-name kyc_completed --customer-external-id user_42

"""
        + _RESULT,
        _track_lead,
    )
    lead.add_argument("--event-name", required=True, help="e.g. signup_started")
    lead.add_argument("--customer-external-id", required=True, help="your stable id for the customer")
    lead.add_argument(
        "--click-id", help="the click to attribute the lead to; leave it out after a deferred lead for the customer"
    )
    lead.add_argument("--mode", choices=["deferred"], help="store the click-to-customer association for later events")
    _customer_options(lead)

    sale = add_command(
        commands,
        "track-sale",
        "Track a sale (amount in cents).",
        """\
examples:
  cms track-sale --click-id id_123 --event-name purchase_completed --customer-external-id user_42 \\
      --invoice-id inv_987 --amount 4999 --currency USD
  # after a deferred lead, the click id can be left out
  cms track-sale --event-name purchase_completed --customer-external-id user_42 \\
      --invoice-id inv_988 --amount 1999 --currency EUR

"""
        + _RESULT,
        _track_sale,
    )
    sale.add_argument("--event-name", required=True, help="e.g. purchase_completed")
    sale.add_argument("--customer-external-id", required=True, help="your stable id for the customer")
    sale.add_argument("--invoice-id", required=True, help="your invoice id: each invoice is recorded once")
    sale.add_argument("--amount", required=True, type=int, help="in cents, e.g. 4999 for 49.99")
    sale.add_argument("--currency", required=True, help="3-letter ISO 4217 code, e.g. USD")
    sale.add_argument(
        "--click-id", help="the click to attribute the sale to; optional after a deferred lead for the customer"
    )
    _customer_options(sale)


def _customer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customer-name")
    parser.add_argument("--customer-email")
    parser.add_argument("--customer-avatar", help="an http(s) URL")
    parser.add_argument(
        "--timestamp", type=timestamp, help="when it happened, ISO 8601 with a UTC offset: 2024-05-01T12:00:00+02:00"
    )
    parser.add_argument("--idempotency-key", help="sent as Idempotency-Key (default: a fresh UUID)")
    add_connection_options(parser, attempts=True)


def _customer(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "customer_name": args.customer_name,
        "customer_email": args.customer_email,
        "customer_avatar": args.customer_avatar,
        "timestamp": args.timestamp,
        "idempotency_key": args.idempotency_key,
    }


def _track_lead(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        result = client.track_lead(
            event_name=args.event_name,
            customer_external_id=args.customer_external_id,
            click_id=args.click_id,
            mode=args.mode,
            **_customer(args),
        )
    return _report(result)


def _track_sale(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        result = client.track_sale(
            event_name=args.event_name,
            customer_external_id=args.customer_external_id,
            invoice_id=args.invoice_id,
            amount=args.amount,
            currency=args.currency,
            click_id=args.click_id,
            **_customer(args),
        )
    return _report(result)


def _report(result: TrackResult) -> int:
    write(strict_json(result))
    return 0 if result["success"] else 1
