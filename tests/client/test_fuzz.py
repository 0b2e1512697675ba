"""Property tests over every keyword argument of `track_lead` and `track_sale`, for both faces.

For any values: the call never raises; a `validation_error` sends nothing; anything that is sent is exactly the
camelCase body of the arguments and validates against the spec's LeadPayload / SalePayload (JSON Schema 2020-12,
with format checking). One loopback server and one client serve all the examples of a test.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from ..conftest import SPEC_PATH, Face
from ..support.servers import LoopbackServer, Reply

SPEC = yaml.safe_load(SPEC_PATH.read_text())
MAX_AMOUNT = 2**53 - 1
MB = 1_000_000
ACCEPTED = {"success": True, "message": "Event tracked successfully", "data": None}

CAMEL = {
    "event_name": "eventName",
    "customer_external_id": "customerExternalId",
    "click_id": "clickId",
    "customer_name": "customerName",
    "customer_email": "customerEmail",
    "customer_avatar": "customerAvatar",
    "timestamp": "timestamp",
    "mode": "mode",
    "invoice_id": "invoiceId",
    "amount": "amount",
    "currency": "currency",
}


# --- the spec's request schemas, with real format checks ----------------------------------------------------------

_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
# RFC 3986 `URI` (absolute, optional query and fragment), after its ABNF.
_URI = re.compile(
    rf"[A-Za-z][A-Za-z0-9+.\-]*:"
    rf"(?://(?:(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*@)?"
    rf"(?:\[[0-9A-Fa-f:.]+\]|\[v[0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+\]|(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*)"
    rf"(?::[0-9]*)?(?:/{_PCHAR}*)*"
    rf"|/?(?:{_PCHAR}+(?:/{_PCHAR}*)*)?)"
    rf"(?:\?(?:{_PCHAR}|[/?])*)?"
    rf"(?:#(?:{_PCHAR}|[/?])*)?"
)

FORMATS = FormatChecker()


# jsonschema checks "uri" only when rfc3987 is installed, and it is not a dependency: check RFC 3986 here.
@FORMATS.checks("uri")
def _is_uri(instance: object) -> bool:
    return not isinstance(instance, str) or _URI.fullmatch(instance) is not None


assert "date-time" in FORMATS.checkers, "rfc3339-validator (a jsonschema[format] extra) is needed for date-time"
assert "email" in FORMATS.checkers

_REGISTRY = Registry().with_resource("urn:cutmeshort", Resource.from_contents(SPEC, default_specification=DRAFT202012))


def validator(name: str) -> Draft202012Validator:
    schema = {"$ref": f"urn:cutmeshort#/components/schemas/{name}"}
    return Draft202012Validator(schema, registry=_REGISTRY, format_checker=FORMATS)


VALIDATORS = {"track_lead": validator("LeadPayload"), "track_sale": validator("SalePayload")}


def test_the_schema_checks_are_strict():
    # The checks below would be worthless if the validators accepted anything.
    lead = VALIDATORS["track_lead"]
    assert lead.is_valid({"eventName": "e", "customerExternalId": "c", "mode": "deferred"})
    assert not lead.is_valid({"eventName": "e", "customerExternalId": "c", "mode": "later"})
    assert not lead.is_valid({"eventName": "e", "customerExternalId": "c", "extra": 1})
    assert not lead.is_valid({"eventName": "", "customerExternalId": "c"})
    assert not lead.is_valid({"eventName": "e", "customerExternalId": "c", "timestamp": "2024-01-01T00:00:00"})
    assert not lead.is_valid({"eventName": "e", "customerExternalId": "c", "timestamp": "2024-01-01T00:00:00+00:00:30"})
    assert not lead.is_valid({"eventName": "e", "customerExternalId": "c", "customerEmail": "nobody"})
    assert not lead.is_valid({"eventName": "e", "customerExternalId": "c", "customerAvatar": "http://a.com/ü"})
    assert not lead.is_valid({"eventName": "e", "customerExternalId": "c", "customerAvatar": "http://a.com/<x>"})
    assert lead.is_valid({"eventName": "e", "customerExternalId": "c", "customerAvatar": "https://a.com/p%20q?x=1#f"})
    sale = VALIDATORS["track_sale"]
    good = {"eventName": "e", "customerExternalId": "c", "invoiceId": "i", "amount": 0, "currency": "USD"}
    assert sale.is_valid(good)
    assert not sale.is_valid({**good, "currency": "usd"})
    assert not sale.is_valid({**good, "amount": MAX_AMOUNT + 1})
    assert not sale.is_valid({**good, "amount": 1.5})


# --- strategies ---------------------------------------------------------------------------------------------------


class BrokenTz(tzinfo):
    """A tzinfo whose utcoffset() raises."""

    def utcoffset(self, dt):
        raise ValueError("broken")

    def dst(self, dt):
        return None

    def tzname(self, dt):
        return "BROKEN"


class NaiveTz(tzinfo):
    """A tzinfo that says "I don't know" (the datetime is then naive)."""

    def utcoffset(self, dt):
        return None

    def dst(self, dt):
        return None


EVERY_CHARACTER = st.characters(exclude_categories=())  # control characters and lone surrogates included
# Whole-minute offsets only: a sub-minute offset is a known bug, see test_sub_minute_offset_is_sent_as_rfc3339.
WHOLE_MINUTE_TZ = st.one_of(
    st.just(timezone.utc),
    st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda minutes: timezone(timedelta(minutes=minutes))),
    st.sampled_from(["Europe/Paris", "Asia/Kolkata", "America/St_Johns", "Australia/Eucla", "Pacific/Chatham"]).map(
        ZoneInfo
    ),
)
AWARE = st.one_of(
    st.datetimes(timezones=WHOLE_MINUTE_TZ.filter(lambda tz: isinstance(tz, timezone))),
    st.datetimes(min_value=datetime(1980, 1, 1), max_value=datetime(2200, 1, 1), timezones=WHOLE_MINUTE_TZ),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=16), st.text(max_size=16))
LONG_TEXT = st.builds(
    lambda s, n: (s * n)[:10_000], st.text(EVERY_CHARACTER, min_size=1, max_size=8), st.integers(1, 2000)
)
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, MAX_AMOUNT, MAX_AMOUNT + 1, 2**64, -(2**63)]),
    st.floats(),  # NaN and infinities included
    st.binary(max_size=32),
    st.text(EVERY_CHARACTER, max_size=40),
    LONG_TEXT,
    st.sampled_from(["", " ", "\t", "\n", "\x00", "\ud800", "deferred", "USD", "usd", "a@b.co", "https://a.io/x"]),
    st.datetimes(),  # naive
    AWARE,
    st.datetimes(timezones=st.sampled_from([BrokenTz(), NaiveTz()])),
    st.dates(),
    st.lists(SCALARS, max_size=4),
    st.dictionaries(st.text(max_size=8), SCALARS, max_size=4),
    st.tuples(SCALARS),
)

CLEAN_TEXT = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,19}", fullmatch=True),
    st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(str.strip),
)
URL = st.builds(
    "{}://{}{}{}".format,
    st.sampled_from(["http", "https", "HTTPS"]),
    st.one_of(st.from_regex(r"[a-z0-9]{1,12}(\.[a-z]{2,6}){1,2}", fullmatch=True), st.just("127.0.0.1:8080")),
    st.from_regex(r"(/[A-Za-z0-9._~-]{0,10}){0,3}", fullmatch=True),
    st.from_regex(r"(\?[a-z]{1,4}=[A-Za-z0-9]{0,6}(&[a-z]=[0-9]{1,3})?)?", fullmatch=True),
)
SHARED = {
    "event_name": CLEAN_TEXT,
    "customer_external_id": CLEAN_TEXT,
    "click_id": CLEAN_TEXT,
    "customer_name": st.one_of(st.just(""), CLEAN_TEXT),
    "customer_email": st.emails(),
    "customer_avatar": URL,
    "timestamp": AWARE,
    "idempotency_key": st.one_of(st.uuids().map(str), st.from_regex(r"[\x21-\x7e]{1,255}", fullmatch=True)),
}
VALID = {
    "track_lead": {**SHARED, "mode": st.just("deferred")},
    "track_sale": {
        **SHARED,
        "invoice_id": CLEAN_TEXT,
        "amount": st.one_of(st.integers(0, MAX_AMOUNT), st.sampled_from([0, MAX_AMOUNT])),
        "currency": st.from_regex(r"[A-Za-z]{3}", fullmatch=True),
    },
}
REQUIRED = {
    "track_lead": ("event_name", "customer_external_id"),
    "track_sale": ("event_name", "customer_external_id", "invoice_id", "amount", "currency"),
}


@st.composite
def calls(draw: st.DrawFn, method: str, replace: int = 3) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Valid keyword arguments, then up to `replace` of them (possibly absent ones) replaced by anything at all."""
    fields = VALID[method]
    required = REQUIRED[method]
    kwargs = draw(
        st.fixed_dictionaries(
            {name: fields[name] for name in required},
            optional={name: strategy for name, strategy in fields.items() if name not in required},
        )
    )
    replaced = tuple(draw(st.lists(st.sampled_from(sorted(fields)), max_size=replace, unique=True)))
    for name in replaced:
        kwargs[name] = draw(ANYTHING)
    return kwargs, replaced


# --- oracles ------------------------------------------------------------------------------------------------------


def must_reject(method: str, kwargs: dict[str, Any]) -> set[str]:
    """Names of arguments that are wrong by any reading of the contract (types, emptiness, formats, lengths)."""
    wrong = set()
    schema = "LeadPayload" if method == "track_lead" else "SalePayload"
    for name, value in kwargs.items():
        limit = SPEC["components"]["schemas"][schema]["properties"].get(CAMEL.get(name, name), {}).get("maxLength")
        if isinstance(value, str) and limit is not None and len(value) > limit:
            wrong.add(name)
    for name in REQUIRED[method]:
        if name in ("amount", "currency"):
            continue
        if not isinstance(kwargs[name], str) or kwargs[name] == "":
            wrong.add(name)
    for name in ("click_id", "customer_name", "customer_email", "customer_avatar"):
        value = kwargs.get(name)
        if value is not None and not isinstance(value, str):
            wrong.add(name)
    if kwargs.get("click_id") == "":
        wrong.add("click_id")
    email = kwargs.get("customer_email")
    if isinstance(email, str) and "@" not in email:
        wrong.add("customer_email")
    avatar = kwargs.get("customer_avatar")
    if isinstance(avatar, str) and not avatar.lower().startswith(("http://", "https://")):
        wrong.add("customer_avatar")
    stamp = kwargs.get("timestamp")
    if stamp is not None and (
        not isinstance(stamp, datetime) or stamp.tzinfo is None or isinstance(stamp.tzinfo, NaiveTz | BrokenTz)
    ):
        wrong.add("timestamp")
    key = kwargs.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not re.fullmatch(r"[\x21-\x7e]{1,255}", key)):
        wrong.add("idempotency_key")
    if method == "track_lead":
        mode = kwargs.get("mode")
        if mode is not None and (not isinstance(mode, str) or mode != "deferred" or kwargs.get("click_id") is None):
            wrong.add("mode")
    else:
        amount = kwargs["amount"]
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= MAX_AMOUNT:
            wrong.add("amount")
        currency = kwargs["currency"]
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
            wrong.add("currency")
    return wrong


def expected_body(kwargs: dict[str, Any]) -> dict[str, Any]:
    body = {}
    for name, value in kwargs.items():
        if name == "idempotency_key" or value is None:
            continue
        if name == "timestamp":
            body[CAMEL[name]] = value.isoformat()
        elif name == "currency":
            body[CAMEL[name]] = value.upper()
        else:
            body[CAMEL[name]] = value
    return body


def check_call(server: LoopbackServer, client: Any, method: str, kwargs: dict[str, Any], replaced: tuple[str, ...]):
    before = len(server.requests)
    result = getattr(client, method)(**kwargs)  # must not raise
    sent = server.requests[before:]
    assert isinstance(result, dict)
    wrong = must_reject(method, kwargs)
    if result.get("type") == "validation_error":
        assert sent == [], "a validation_error must send nothing"
        assert result["success"] is False
        assert result["status_code"] is None
        assert isinstance(result["details"], dict)
        assert result["details"]
        assert set(result["details"]) <= set(kwargs)
        assert wrong <= set(result["details"]), f"not reported: {wrong - set(result['details'])}"
        assert all(isinstance(problem, str) and problem for problem in result["details"].values())
        if not replaced:
            # Only valid values, but mode="deferred" may have come without its click_id.
            assert set(result["details"]) == {"mode"}
            assert "click_id" not in kwargs
        return
    assert not wrong, f"sent although {wrong} are wrong"
    assert result == ACCEPTED
    (request,) = sent
    body = request.json
    errors = [error.message for error in VALIDATORS[method].iter_errors(body)]
    assert errors == [], errors
    assert body == expected_body(kwargs)
    (key,) = [v for k, v in request.headers.items() if k.lower() == "idempotency-key"]
    if kwargs.get("idempotency_key") is None:
        assert uuid.UUID(key).version == 4
    else:
        assert key == kwargs["idempotency_key"]


@contextlib.contextmanager
def running(kind: str) -> Iterator[tuple[LoopbackServer, Any]]:
    """One server and one client for all the examples of a test (fixtures would be per test, not per example)."""
    server = LoopbackServer()
    # An empty 200 (accepted, nothing to report) goes out in one TCP segment: with a JSON body the server's
    # second write waits ~40 ms on a delayed ACK, which would dominate the run time.
    server.default = Reply(body=b"")
    face = Face(kind)
    try:
        yield server, face.client(host=server.url, max_retries=0)
    finally:
        face.close()
        server.close()


FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
BIG = "é" * MB
LEAD_OK = {"event_name": "signup_started", "customer_external_id": "user_42", "click_id": "id_123"}
SALE_OK = {
    "event_name": "purchase",
    "customer_external_id": "user_42",
    "invoice_id": "inv_1",
    "amount": 1,
    "currency": "eur",
}


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("method", ["track_lead", "track_sale"])
def test_any_arguments(kind, method):
    base = LEAD_OK if method == "track_lead" else SALE_OK
    with running(kind) as (server, client):

        @FUZZ
        @given(call=calls(method))
        @example(call=({**base, "customer_name": BIG, "event_name": "x" * MB}, ("customer_name", "event_name")))
        @example(call=({**base, "customer_external_id": "y" * MB + "\n"}, ("customer_external_id",)))
        @example(call=({**base, "click_id": "\ud800" * 1000}, ("click_id",)))
        @example(call=({**base, "customer_avatar": "https://cdn.example.com/" + "a" * MB}, ("customer_avatar",)))
        @example(call=({**base, "customer_avatar": "https://cdn.example.com/" + "a" * (2048 - 24)}, ()))
        def check(call: tuple[dict[str, Any], tuple[str, ...]]) -> None:
            check_call(server, client, method, *call)

        check()
        # Many examples were valid and did reach the server (about half of them with this profile).
        assert len(server.requests) >= 60


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_valid_arguments_are_always_sent(kind):
    with running(kind) as (server, client):

        @settings(FUZZ, max_examples=60)
        @given(method=st.sampled_from(["track_lead", "track_sale"]), data=st.data())
        def check(method: str, data: st.DataObject) -> None:
            kwargs, _ = data.draw(calls(method, replace=0))
            if kwargs.get("mode") == "deferred" and "click_id" not in kwargs:
                kwargs["click_id"] = "id_123"
            before = len(server.requests)
            assert getattr(client, method)(**kwargs) == ACCEPTED
            (request,) = server.requests[before:]
            assert VALIDATORS[method].is_valid(request.json)
            assert request.json == expected_body(kwargs)

        check()


# --- known bugs: values the SDK sends although they break the spec's formats ----------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    [
        datetime(2024, 1, 1, tzinfo=timezone(timedelta(seconds=30))),
        datetime(1900, 1, 1, 12, tzinfo=ZoneInfo("Europe/Amsterdam")),  # +00:19:32
    ],
    ids=["fixed-offset", "zoneinfo-lmt"],
)
def test_sub_minute_offset_is_sent_as_rfc3339(client, server, timestamp):
    result = client.track_lead(**LEAD_OK, timestamp=timestamp)
    if result["success"]:
        (request,) = server.requests
        assert VALIDATORS["track_lead"].is_valid(request.json), request.json["timestamp"]
    else:  # refusing the value is as good as sending a valid one
        assert server.requests == []


@pytest.mark.parametrize(
    "avatar",
    ["https://exämple.com/a.png", "https://cdn.example.com/ü.png", "https://cdn.example.com/<x>", "https://a.io/%zz"],
)
def test_avatar_sent_is_an_rfc3986_uri(client, server, avatar):
    result = client.track_lead(**LEAD_OK, customer_avatar=avatar)
    if result["success"]:
        (request,) = server.requests
        assert VALIDATORS["track_lead"].is_valid(request.json), request.json["customerAvatar"]
    else:
        assert server.requests == []
