"""The OpenAPI description (openapi/cutmeshort.yaml) is valid and says what the API notes say."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

ERROR_STATUSES = ["400", "401", "403", "404", "409", "422", "429", "500", "502", "503", "504"]
OPERATIONS = [
    pytest.param("/track/lead", "trackLead", "LeadPayload", id="lead"),
    pytest.param("/track/sale", "trackSale", "SalePayload", id="sale"),
]
GOOD_LEAD = {"eventName": "signup_started", "customerExternalId": "user_42", "clickId": "id_123"}
GOOD_SALE = {
    "eventName": "purchase_completed",
    "customerExternalId": "user_42",
    "invoiceId": "inv_987",
    "amount": 4999,
    "currency": "USD",
}


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local `$ref`s ("#/components/...") until a node without one."""
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def ref_name(node: dict[str, Any]) -> str:
    return str(node["$ref"]).rsplit("/", 1)[-1]


def schema_validator(spec: dict[str, Any], name: str) -> Draft202012Validator:
    """A JSON Schema validator for one component schema (OpenAPI 3.1 schemas are JSON Schema 2020-12)."""
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


def test_spec_is_a_valid_openapi_document(spec):
    validate(spec)
    assert spec["openapi"].startswith("3.")


def test_default_server_is_the_api_host(spec):
    assert [server["url"] for server in spec["servers"]] == ["https://api.cme.sh"]


def test_bearer_auth_applies_to_everything(spec):
    schemes = spec["components"]["securitySchemes"]
    assert spec["security"] == [{"bearerAuth": []}]
    assert schemes["bearerAuth"]["type"] == "http"
    assert schemes["bearerAuth"]["scheme"].lower() == "bearer"


def test_only_the_two_tracking_operations_exist(spec):
    operations = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert operations == {("/track/lead", "post"), ("/track/sale", "post")}


@pytest.mark.parametrize(("path", "operation_id", "payload"), OPERATIONS)
def test_operation_id_tag_and_body(spec, path, operation_id, payload):
    operation = spec["paths"][path]["post"]
    assert operation["operationId"] == operation_id
    assert operation["tags"] == ["tracking"]
    assert "tracking" in {tag["name"] for tag in spec["tags"]}
    body = operation["requestBody"]
    assert body["required"] is True
    assert ref_name(body["content"]["application/json"]["schema"]) == payload


@pytest.mark.parametrize(("path", "operation_id", "payload"), OPERATIONS)
def test_idempotency_key_header(spec, path, operation_id, payload):
    (parameter,) = [resolve(spec, p) for p in spec["paths"][path]["post"]["parameters"]]
    assert (parameter["name"], parameter["in"], parameter["required"]) == ("Idempotency-Key", "header", False)
    assert parameter["schema"] == {"type": "string", "minLength": 1, "maxLength": 255}


@pytest.mark.parametrize(("path", "operation_id", "payload"), OPERATIONS)
@pytest.mark.parametrize("status", ERROR_STATUSES)
def test_error_statuses_use_error_response(spec, path, operation_id, payload, status):
    response = resolve(spec, spec["paths"][path]["post"]["responses"][status])
    assert ref_name(response["content"]["application/json"]["schema"]) == "ErrorResponse"


@pytest.mark.parametrize(("path", "operation_id", "payload"), OPERATIONS)
def test_success_uses_track_response(spec, path, operation_id, payload):
    responses = spec["paths"][path]["post"]["responses"]
    for status in ("200", "2XX"):
        response = resolve(spec, responses[status])
        assert ref_name(response["content"]["application/json"]["schema"]) == "TrackResponse"


def test_lead_payload_schema(spec):
    schema = spec["components"]["schemas"]["LeadPayload"]
    assert sorted(schema["required"]) == ["customerExternalId", "eventName"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {
        "eventName",
        "customerExternalId",
        "clickId",
        "mode",
        "customerName",
        "customerEmail",
        "customerAvatar",
        "timestamp",
    }
    mode = resolve(spec, schema["properties"]["mode"])
    assert (mode["type"], mode["enum"]) == ("string", ["deferred"])
    assert schema["properties"]["timestamp"]["format"] == "date-time"


def test_sale_payload_schema(spec):
    schema = spec["components"]["schemas"]["SalePayload"]
    assert sorted(schema["required"]) == ["amount", "currency", "customerExternalId", "eventName", "invoiceId"]
    assert schema["additionalProperties"] is False
    properties = schema["properties"]
    assert properties["amount"]["type"] == "integer"
    assert properties["amount"]["minimum"] == 0
    assert properties["amount"]["maximum"] == 2**53 - 1
    assert properties["currency"]["pattern"] == "^[A-Z]{3}$"
    assert "clickId" not in schema["required"]


def test_error_response_schema(spec):
    properties = spec["components"]["schemas"]["ErrorResponse"]["properties"]
    assert properties["error"]["type"] == "string"
    assert properties["type"]["type"] == "string"
    assert properties["statusCode"]["type"] == "integer"
    assert properties["details"]["type"] == "object"


@pytest.mark.parametrize(
    ("payload", "body", "valid"),
    [
        pytest.param("LeadPayload", GOOD_LEAD, True, id="lead-standard"),
        pytest.param("LeadPayload", {**GOOD_LEAD, "mode": "deferred"}, True, id="lead-deferred"),
        pytest.param("LeadPayload", {"eventName": "kyc", "customerExternalId": "u"}, True, id="lead-later-call"),
        pytest.param("LeadPayload", {**GOOD_LEAD, "mode": "instant"}, False, id="lead-mode-instant"),
        pytest.param("LeadPayload", {**GOOD_LEAD, "mode": "DEFERRED"}, False, id="lead-mode-upper"),
        pytest.param("LeadPayload", {"customerExternalId": "u"}, False, id="lead-no-event"),
        pytest.param("LeadPayload", {**GOOD_LEAD, "eventName": ""}, False, id="lead-empty-event"),
        pytest.param("LeadPayload", {**GOOD_LEAD, "clickid": "x"}, False, id="lead-unknown-key"),
        pytest.param("LeadPayload", {**GOOD_LEAD, "clickId": None}, False, id="lead-null-click"),
        pytest.param("SalePayload", GOOD_SALE, True, id="sale"),
        pytest.param("SalePayload", {**GOOD_SALE, "amount": 0}, True, id="sale-amount-0"),
        pytest.param("SalePayload", {**GOOD_SALE, "amount": -1}, False, id="sale-amount-negative"),
        pytest.param("SalePayload", {**GOOD_SALE, "amount": 49.99}, False, id="sale-amount-float"),
        pytest.param("SalePayload", {**GOOD_SALE, "amount": 2**53}, False, id="sale-amount-too-big"),
        pytest.param("SalePayload", {**GOOD_SALE, "currency": "usd"}, False, id="sale-currency-lower"),
        pytest.param("SalePayload", {**GOOD_SALE, "currency": "USDD"}, False, id="sale-currency-4"),
        pytest.param("SalePayload", {k: v for k, v in GOOD_SALE.items() if k != "invoiceId"}, False, id="sale-no-inv"),
    ],
)
def test_payload_schemas_accept_and_reject(spec, payload, body, valid):
    errors = list(schema_validator(spec, payload).iter_errors(body))
    assert (not errors) is valid, [error.message for error in errors]
