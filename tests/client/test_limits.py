"""Field lengths: the spec's `maxLength`s are CutMeShort's limits, and the spec (jsonschema), the SDK's checks
and the sandbox agree on them at the edge: 255 characters pass, 256 do not; characters are code points."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from cms_python._operations import LEAD as LEAD_OPERATION
from cms_python._operations import SALE as SALE_OPERATION
from cms_python._requests import max_lengths
from cms_python.testing import SANDBOX_HOST, SANDBOX_TOKEN, Sandbox

from ..conftest import LEAD, SALE

#: CutMeShort's TypeScript SDK's limits (API notes), and this project's cap for avatar URLs.
LIMITS = {
    "clickId": 255,
    "customerExternalId": 255,
    "eventName": 255,
    "invoiceId": 255,
    "customerName": 255,
    "customerEmail": 255,
    "customerAvatar": 2048,
}
KEYWORDS = {
    "clickId": "click_id",
    "customerExternalId": "customer_external_id",
    "eventName": "event_name",
    "invoiceId": "invoice_id",
    "customerName": "customer_name",
    "customerEmail": "customer_email",
    "customerAvatar": "customer_avatar",
}
SCHEMAS = {"track_lead": "LeadPayload", "track_sale": "SalePayload"}
BASE = {"track_lead": LEAD, "track_sale": SALE}
WIRE_BASE = {
    "track_lead": {"eventName": "signup_started", "customerExternalId": "user_42", "clickId": "id_123"},
    "track_sale": {
        "eventName": "purchase_completed",
        "customerExternalId": "user_42",
        "invoiceId": "inv_987",
        "amount": 4999,
        "currency": "USD",
        "clickId": "id_123",
    },
}
SMILE = "\N{GRINNING FACE}"  # beyond the BMP: one code point, two UTF-16 units


def value_of(field: str, length: int, filler: str = "a") -> str:
    """A valid value of `field` exactly `length` code points long, made of `filler` where the format allows."""
    if field == "customerEmail":
        return filler * (length - len("@example.com")) + "@example.com"
    if field == "customerAvatar":
        return "https://example.com/" + "a" * (length - len("https://example.com/"))
    return filler * length


def spec_accepts(spec: dict[str, Any], method: str, body: dict[str, Any]) -> bool:
    schema = {"$ref": f"#/components/schemas/{SCHEMAS[method]}", "components": spec["components"]}
    return Draft202012Validator(schema, format_checker=FormatChecker()).is_valid(body)


def sandbox_answer(method: str, body: dict[str, Any]) -> httpx.Response:
    """What a sandbox answers to `body` sent as it is, past the SDK's checks."""
    with httpx.Client(transport=Sandbox().transport(), base_url=SANDBOX_HOST) as http:
        path = "/track/lead" if method == "track_lead" else "/track/sale"
        return http.post(path, json=body, headers={"Authorization": f"Bearer {SANDBOX_TOKEN}"})


def sdk_result(method: str, keyword: str, value: str) -> Any:
    sandbox = Sandbox()
    with sandbox.client(max_retries=0) as client:
        return getattr(client, method)(**{**BASE[method], keyword: value}), sandbox


CASES = [
    pytest.param(method, field, id=f"{method}-{field}")
    for method in ("track_lead", "track_sale")
    for field in LIMITS
    if not (method == "track_lead" and field == "invoiceId")
]


@pytest.mark.parametrize(("method", "field"), CASES)
def test_the_spec_sets_the_limits(spec, method, field):
    schema = spec["components"]["schemas"][SCHEMAS[method]]["properties"][field]
    assert schema["maxLength"] == LIMITS[field]
    # Present means non-empty, but for the name (an unknown name may be sent as "").
    assert schema.get("minLength") == (None if field == "customerName" else 1)


def test_the_sdk_reads_its_limits_from_the_packaged_spec():
    assert max_lengths(LEAD_OPERATION) == {KEYWORDS[f]: limit for f, limit in LIMITS.items() if f != "invoiceId"}
    assert max_lengths(SALE_OPERATION) == {KEYWORDS[field]: limit for field, limit in LIMITS.items()}


EDGES = [
    pytest.param(method, field, filler, id=f"{method}-{field}-{name}")
    for method, field in [case.values for case in CASES]
    for filler, name in [("a", "ascii"), (SMILE, "non-bmp")]
    if not (field == "customerAvatar" and filler == SMILE)  # a URI is ASCII
]


@pytest.mark.parametrize(("method", "field", "filler"), EDGES)
def test_the_edge_is_the_same_in_the_spec_the_sdk_and_the_sandbox(spec, method, field, filler):
    limit, keyword = LIMITS[field], KEYWORDS[field]
    longest, too_long = value_of(field, limit, filler), value_of(field, limit + 1, filler)
    assert (len(longest), len(too_long)) == (limit, limit + 1)

    # The spec, through jsonschema (formats checked too).
    assert spec_accepts(spec, method, {**WIRE_BASE[method], field: longest})
    assert not spec_accepts(spec, method, {**WIRE_BASE[method], field: too_long})

    # The SDK: the longest value is sent (and the sandbox records it); one more character is refused unsent.
    result, sandbox = sdk_result(method, keyword, longest)
    assert result["success"] is True, result
    assert sandbox.requests[0].json[field] == longest
    result, sandbox = sdk_result(method, keyword, too_long)
    assert result["type"] == "validation_error"
    assert keyword in result["error"]
    assert result["details"] == {keyword: f"must be at most {limit} characters, got {limit + 1}"}
    assert sandbox.requests == []

    # The sandbox, sent the body past the SDK's checks.
    assert sandbox_answer(method, {**WIRE_BASE[method], field: longest}).status_code == 200
    refused = sandbox_answer(method, {**WIRE_BASE[method], field: too_long})
    assert refused.status_code == 422
    assert field in refused.json()["details"]
