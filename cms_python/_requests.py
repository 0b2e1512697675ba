"""Check a call's keyword arguments and build the generated request model from them.

Nothing here does I/O: `build_lead` and `build_sale` return either a `TrackRequest` ready to send or the
`validation_error` dict. Their signatures are the clients' `track_lead` / `track_sale` (see `_base`).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from cms_api_client.models import LeadPayload, SalePayload

from ._operations import LEAD, SALE, Operation, Payload, TrackRequest
from ._results import validation_error
from ._types import TrackError

#: JSON parsers that use doubles (JavaScript's) lose cents above this.
MAX_AMOUNT = 2**53 - 1
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
# The characters RFC 3986 allows in a URI, "%" only as an escape.
_URI = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")
# Header values must be visible ASCII; the spec caps the key at 255 characters.
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_T = TypeVar("_T")


def build_lead(
    *,
    event_name: str,
    customer_external_id: str,
    click_id: str | None = None,
    customer_name: str | None = None,
    customer_email: str | None = None,
    customer_avatar: str | None = None,
    timestamp: datetime | None = None,
    mode: Literal["deferred"] | None = None,
    idempotency_key: str | None = None,
) -> TrackRequest[LeadPayload] | TrackError:
    """`track_lead`'s arguments, checked: the request to send, or the `validation_error` dict."""
    fields = _Fields()
    values = {
        "event_name": fields.text("event_name", event_name),
        "customer_external_id": fields.text("customer_external_id", customer_external_id),
        "click_id": fields.optional_text("click_id", click_id),
        "mode": fields.mode(mode, click_id),
        **fields.details(customer_name, customer_email, customer_avatar, timestamp),
    }
    return fields.request(LEAD, values, idempotency_key)


def build_sale(
    *,
    event_name: str,
    customer_external_id: str,
    invoice_id: str,
    amount: int,
    currency: str,
    click_id: str | None = None,
    customer_name: str | None = None,
    customer_email: str | None = None,
    customer_avatar: str | None = None,
    timestamp: datetime | None = None,
    idempotency_key: str | None = None,
) -> TrackRequest[SalePayload] | TrackError:
    """`track_sale`'s arguments, checked: the request to send, or the `validation_error` dict."""
    fields = _Fields()
    values = {
        "event_name": fields.text("event_name", event_name),
        "customer_external_id": fields.text("customer_external_id", customer_external_id),
        "invoice_id": fields.text("invoice_id", invoice_id),
        "amount": fields.amount(amount),
        "currency": fields.currency(currency),
        "click_id": fields.optional_text("click_id", click_id),
        **fields.details(customer_name, customer_email, customer_avatar, timestamp),
    }
    return fields.request(SALE, values, idempotency_key)


class _Fields:
    """Checks values one by one, remembering every problem (keyed by keyword name) instead of stopping.

    The checked values of absent optional arguments are None, and left out of the model.
    """

    __slots__ = ("problems",)

    def __init__(self) -> None:
        self.problems: dict[str, str] = {}

    def request(
        self, operation: Operation[Payload], values: dict[str, Any], key: object
    ) -> TrackRequest[Payload] | TrackError:
        if key is None:
            key = str(uuid.uuid4())
        elif not isinstance(key, str) or not _IDEMPOTENCY_KEY.fullmatch(key):
            self.problems["idempotency_key"] = "must be 1 to 255 visible ASCII characters"
        if self.problems:
            return validation_error(self.problems)
        body = operation.payload(**{name: value for name, value in values.items() if value is not None})
        return TrackRequest(operation, body, str(key))

    def details(self, name: object, email: object, avatar: object, timestamp: object) -> dict[str, Any]:
        """The optional fields leads and sales share, as the generated models' keyword arguments."""
        return {
            "customer_name": self.optional_text("customer_name", name, allow_empty=True),
            "customer_email": self.email("customer_email", email),
            "customer_avatar": self.url("customer_avatar", avatar),
            "timestamp": self.timestamp("timestamp", timestamp),
        }

    def text(self, name: str, value: object) -> str:
        if not isinstance(value, str):
            return self._bad(name, f"must be a str, got {type(value).__name__}", "")
        if not value.strip():
            return self._bad(name, "must not be empty", "")
        return self._clean(name, value)

    def optional_text(self, name: str, value: object, *, allow_empty: bool = False) -> str | None:
        if value is None:
            return None
        if allow_empty and isinstance(value, str) and not value:
            return value
        return self.text(name, value)

    def email(self, name: str, value: object) -> str | None:
        email = self.optional_text(name, value)
        if isinstance(email, str) and name not in self.problems and not _EMAIL.fullmatch(email):
            return self._bad(name, "must be an email address like jane@example.com", None)
        return email

    def url(self, name: str, value: object) -> str | None:
        url = self.optional_text(name, value)
        if isinstance(url, str) and name not in self.problems:
            try:
                parts = urlsplit(url)
                valid = parts.scheme in ("http", "https") and bool(parts.hostname) and bool(_URI.fullmatch(url))
            except ValueError:
                valid = False
            if not valid:
                return self._bad(name, "must be an http(s) URL (with non-ASCII characters percent-encoded)", None)
        return url

    def timestamp(self, name: str, value: object) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            return self._bad(name, f"must be a datetime, got {type(value).__name__}", None)
        try:
            offset = value.utcoffset()
        except (TypeError, ValueError):  # a tzinfo whose utcoffset() is broken
            offset = None
        if offset is None:
            return self._bad(
                name, "must be timezone-aware, e.g. datetime.now(timezone.utc): a naive one is ambiguous", None
            )
        if offset.seconds % 60 or offset.microseconds:
            # RFC 3339 offsets are whole minutes; historic local mean times (+00:19:32) are sent as UTC instead.
            try:
                return value.astimezone(timezone.utc)
            except OverflowError:
                return self._bad(name, "is out of range once converted to UTC", None)
        return value

    def mode(self, value: object, click_id: object) -> Literal["deferred"] | None:
        if value is None:
            return None
        if not isinstance(value, str) or value != "deferred":
            return self._bad("mode", 'must be "deferred" or None', None)
        if click_id is None:
            return self._bad("mode", 'mode="deferred" needs the click_id to associate with the customer', None)
        return "deferred"

    def amount(self, value: object) -> int:
        # bool is an int subclass, and a float amount is ambiguous (dollars or cents?): both refused.
        if not isinstance(value, int) or isinstance(value, bool):
            return self._bad("amount", f"must be an int number of cents, got {type(value).__name__}", 0)
        if not 0 <= value <= MAX_AMOUNT:
            return self._bad("amount", f"must be between 0 and {MAX_AMOUNT} cents", 0)
        return value

    def currency(self, value: object) -> str:
        if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
            return self._bad("currency", 'must be a 3-letter ISO 4217 code such as "USD"', "")
        return value.upper()

    def _clean(self, name: str, value: str) -> str:
        if _CONTROL_CHARACTERS.search(value):
            return self._bad(name, "must not contain control characters (line breaks, tabs, NUL, ...)", "")
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return self._bad(name, "must be valid Unicode text (it has a lone surrogate)", "")
        return value

    def _bad(self, name: str, problem: str, placeholder: _T) -> _T:
        # The placeholder is never sent, nor put in a model: any problem means no request is built.
        self.problems.setdefault(name, problem)
        return placeholder
