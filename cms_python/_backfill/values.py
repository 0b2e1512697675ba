"""One row of an import made into `track_*` keyword arguments: values converted, the SDK's own checks, and the
idempotency key derived from its content."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeAlias

from .._canonical import canonical_json, content_hash
from .._formats import parse_timestamp
from .._operations import TrackRequest
from .._printable import quoted
from .._requests import build_lead, build_sale
from .._types import TrackError
from .rows import FIELDS, KINDS, REQUIRED, Kind

#: A row ready to queue: its kind and `track_*` keyword arguments; or its problems by field.
Prepared: TypeAlias = "tuple[Kind, dict[str, Any]] | dict[str, str]"
KEY_PREFIX = "import-"
BUILD: dict[Kind, Callable[..., TrackRequest[Any] | TrackError]] = {"lead": build_lead, "sale": build_sale}

_FIELD_SETS = {kind: frozenset(FIELDS[kind]) for kind in KINDS}
_REQUIRED_SETS = {kind: frozenset(REQUIRED[kind]) for kind in KINDS}
_DIGITS = frozenset("0123456789")
_MOST_DIGITS = 1000


def prepare(values: dict[str, Any], text: bool, kind: Kind | None) -> Prepared:
    """The row's kind and `track_*` keyword arguments, or its problems by field (`kind`: the kind of rows that do
    not say; `text`: whether the values are text to convert, as CSV's)."""
    row_kind = values.pop("kind", kind)
    if row_kind not in KINDS:
        reason = "is required: no kind column value and no kind for the whole input"
        return {"kind": reason if row_kind is None else f'must be "lead" or "sale", got {quoted(row_kind)}'}
    problems: dict[str, str] = {}
    if text and "amount" in values:
        amount = values["amount"]
        digits = amount.removeprefix("-")
        # Past 4,300 digits int() refuses to convert (sys.get_int_max_str_digits): no amount is that long.
        if digits and len(digits) <= _MOST_DIGITS and _DIGITS.issuperset(digits):
            values["amount"] = int(amount)
        else:
            problems["amount"] = f"must be a whole number of cents (4999 for 49.99), got {quoted(amount)}"
    timestamp = values.get("timestamp")
    if isinstance(timestamp, str):
        parsed = parse_timestamp(timestamp)
        if isinstance(parsed, datetime):
            values["timestamp"] = parsed
        else:
            problems["timestamp"] = parsed
    fields = _FIELD_SETS[row_kind]
    if not problems and values.keys() <= fields and _REQUIRED_SETS[row_kind] <= values.keys():
        return row_kind, values
    for name in values.keys() - fields:
        problems[name] = f"is not a field of a {row_kind}"
    for name in REQUIRED[row_kind]:
        if name not in values:
            problems[name] = "is required"
    # The SDK's own checks on everything else, so the row's report is complete.
    arguments = {name: values.get(name) for name in FIELDS[row_kind] if name in values or name in problems}
    result = BUILD[row_kind](**arguments)
    found = dict(result["details"] or {}) if isinstance(result, dict) else {}
    return found | problems


def keyed(prepared: Prepared) -> Prepared:
    """A prepared row with its idempotency key: its own `idempotency_key` column, or one from its content."""
    if not isinstance(prepared, dict) and "idempotency_key" not in prepared[1]:
        prepared[1]["idempotency_key"] = row_key(*prepared)
    return prepared


def row_key(kind: Kind, arguments: Mapping[str, Any]) -> str:
    """The idempotency key of a row: a hash of its kind and the canonical JSON of its fields."""
    return KEY_PREFIX + content_hash(kind, canonical_json(arguments))
