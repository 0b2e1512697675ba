"""Check a call's keyword arguments and build the generated request model from them.

Nothing here does I/O: `build_lead` and `build_sale` return either a `TrackRequest` ready to send or the
`validation_error` dict. Their signatures are the clients' `track_lead` / `track_sale` (see `_base`).
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from functools import cache
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from cms_api_client.models import LeadPayload, SalePayload

from ._formats import is_email, is_uri
from ._operations import LEAD, SALE, Operation, TrackRequest
from ._results import validation_error
from ._spec import load_spec
from ._types import TrackError

#: JSON parsers that use doubles (JavaScript's) lose cents above this.
MAX_AMOUNT = 2**53 - 1
# C0 and C1 controls (NEL \x85 and CSI \x9b among them), DEL, and Unicode's line and paragraph separators.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
# Header values must be visible ASCII; the spec caps the key at 255 characters.
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_CAMEL_HUMPS = r"(?=[A-Z])"  # used once (`_max_lengths`), compiled then
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
    fields = _Fields(LEAD)
    values = {
        "event_name": fields.text("event_name", event_name),
        "customer_external_id": fields.text("customer_external_id", customer_external_id),
        "click_id": fields.optional_text("click_id", click_id),
        "mode": fields.mode(mode, click_id),
        **fields.details(customer_name, customer_email, customer_avatar, timestamp),
    }
    return fields.request(values, idempotency_key)


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
    fields = _Fields(SALE)
    values = {
        "event_name": fields.text("event_name", event_name),
        "customer_external_id": fields.text("customer_external_id", customer_external_id),
        "invoice_id": fields.text("invoice_id", invoice_id),
        "amount": fields.amount(amount),
        "currency": fields.currency(currency),
        "click_id": fields.optional_text("click_id", click_id),
        **fields.details(customer_name, customer_email, customer_avatar, timestamp),
    }
    return fields.request(values, idempotency_key)


def max_lengths(operation: Operation[Any]) -> dict[str, int]:
    """The spec's `maxLength` of the operation's string fields, by keyword name: `{"event_name": 255, ...}`.

    Read from the OpenAPI document packaged with the generated client, so the spec is the one place limits
    are written. Lengths count characters (code points, as `len()` and JSON Schema do).
    """
    return _max_lengths(operation.payload.__name__)


@cache
def _max_lengths(schema_name: str) -> dict[str, int]:
    properties = load_spec()["components"]["schemas"][schema_name]["properties"]
    return {
        re.sub(_CAMEL_HUMPS, "_", name).lower(): schema["maxLength"]
        for name, schema in properties.items()
        if "maxLength" in schema
    }


class _Fields:
    """Checks values one by one, remembering every problem (keyed by keyword name) instead of stopping.

    Each value is first converted to its exact built-in type (a `str` subclass to a `str`, ...), once: what is
    checked is what is sent, and no method of a caller's subclass runs after that. The checked values of
    absent optional arguments are None, and left out of the model.
    """

    __slots__ = ("_max_lengths", "_operation", "problems")

    def __init__(self, operation: Operation[Any]) -> None:
        self.problems: dict[str, str] = {}
        self._operation = operation
        self._max_lengths = max_lengths(operation)

    def request(self, values: dict[str, Any], key: object) -> TrackRequest[Any] | TrackError:
        checked = new_key() if key is None else str.__str__(key) if issubclass(type(key), str) else None
        if checked is None or not _IDEMPOTENCY_KEY.fullmatch(checked):
            self.problems["idempotency_key"] = "must be 1 to 255 visible ASCII characters"
        if self.problems or checked is None:
            return validation_error(self.problems)
        body = self._operation.payload(**{name: value for name, value in values.items() if value is not None})
        return TrackRequest(self._operation, body, checked)

    def details(self, name: object, email: object, avatar: object, timestamp: object) -> dict[str, Any]:
        """The optional fields leads and sales share, as the generated models' keyword arguments."""
        return {
            "customer_name": self.optional_text("customer_name", name, allow_empty=True),
            "customer_email": self.email("customer_email", email),
            "customer_avatar": self.url("customer_avatar", avatar),
            "timestamp": self.timestamp("timestamp", timestamp),
        }

    def text(self, name: str, value: object, *, allow_empty: bool = False) -> str:
        if not issubclass(type(value), str):
            return self._bad(name, f"must be a str, got {_type_name(value)}", "")
        text = str.__str__(value)  # an exact str, whatever the subclass overrides
        if not allow_empty and not text.strip():
            return self._bad(name, "must not be empty", "")
        limit = self._max_lengths.get(name)
        if limit is not None and len(text) > limit:
            return self._bad(name, f"must be at most {limit} characters, got {len(text)}", "")
        return self._clean(name, text)

    def optional_text(self, name: str, value: object, *, allow_empty: bool = False) -> str | None:
        return None if value is None else self.text(name, value, allow_empty=allow_empty)

    def email(self, name: str, value: object) -> str | None:
        email = self.optional_text(name, value)
        if isinstance(email, str) and name not in self.problems and not is_email(email):
            return self._bad(name, "must be an email address like jane@example.com", None)
        return email

    def url(self, name: str, value: object) -> str | None:
        url = self.optional_text(name, value)
        if isinstance(url, str) and name not in self.problems:
            try:
                parts = urlsplit(url)
                valid = parts.scheme in ("http", "https") and bool(parts.hostname) and is_uri(url)
            except ValueError:
                valid = False
            if not valid:
                return self._bad(name, "must be an http(s) URL (with non-ASCII characters percent-encoded)", None)
        return url

    def timestamp(self, name: str, value: object) -> datetime | None:
        if value is None:
            return None
        moment = _exact_datetime(value)
        if isinstance(moment, str):
            return self._bad(name, moment, None)
        offset = moment.utcoffset()
        if offset is None:
            return self._bad(
                name, "must be timezone-aware, e.g. datetime.now(timezone.utc): a naive one is ambiguous", None
            )
        if offset.seconds % 60 or offset.microseconds:
            # RFC 3339 offsets are whole minutes; historic local mean times (+00:19:32) are sent as UTC instead.
            try:
                return moment.astimezone(timezone.utc)
            except OverflowError:
                return self._bad(name, "is out of range once converted to UTC", None)
        return moment

    def mode(self, value: object, click_id: object) -> Literal["deferred"] | None:
        if value is None:
            return None
        if not issubclass(type(value), str) or str.__str__(value) != "deferred":
            return self._bad("mode", 'must be "deferred" or None', None)
        if click_id is None:
            return self._bad(
                "mode",
                'mode="deferred" needs the click_id to associate with the customer; leave mode out on follow-up '
                "events of a deferred flow (they carry no click_id: the API finds the click through the customer)",
                None,
            )
        return "deferred"

    def amount(self, value: object) -> int:
        # bool is an int subclass, and a float amount is ambiguous (dollars or cents?): both refused.
        if not issubclass(type(value), int) or issubclass(type(value), bool):
            return self._bad("amount", f"must be an int number of cents, got {_type_name(value)}", 0)
        amount = int.__index__(value)  # type: ignore[arg-type]  # an exact int, whatever the subclass overrides
        if not 0 <= amount <= MAX_AMOUNT:
            return self._bad("amount", f"must be between 0 and {MAX_AMOUNT} cents", 0)
        return amount

    def currency(self, value: object) -> str:
        currency = str.__str__(value) if issubclass(type(value), str) else None
        if currency is None or not _CURRENCY.fullmatch(currency):
            return self._bad("currency", 'must be a 3-letter ISO 4217 code such as "USD"', "")
        return currency.upper()

    def _clean(self, name: str, value: str) -> str:
        if _CONTROL_CHARACTERS.search(value):
            return self._bad(
                name, "must not contain control characters (line breaks, tabs, NUL, escape sequences, ...)", ""
            )
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


def new_key() -> str:
    """A random idempotency key: a version 4 UUID, as `str(uuid.uuid4())` writes it, in less than half its time
    (every call without a key makes one)."""
    octets = bytearray(os.urandom(16))
    octets[6] = octets[6] & 0x0F | 0x40  # the version, 4
    octets[8] = octets[8] & 0x3F | 0x80  # the variant, RFC 4122's
    digits = octets.hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _exact_datetime(value: object) -> datetime | str:
    """`value` as an exact `datetime` with a fixed-offset tzinfo (or naive), or what is wrong with it.

    datetime's own `isoformat` calls the tzinfo's `utcoffset()` once; the datetime parsed from that text
    formats the same way every time it is sent, whatever the caller's subclass or tzinfo would do.
    """
    if not issubclass(type(value), datetime):
        return f"must be a datetime, got {_type_name(value)}"
    try:
        return datetime.fromisoformat(datetime.isoformat(value))  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - a caller's tzinfo can raise anything: it becomes a validation_error
        return f"could not be read: its tzinfo raised {_type_name(exc)}"


def _type_name(value: object) -> str:
    # Read through `type` itself: a metaclass could make `type(value).__name__` run code of its own.
    name: str = type.__dict__["__name__"].__get__(type(value))
    return name
