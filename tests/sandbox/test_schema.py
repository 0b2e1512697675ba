"""The sandbox's hand-written JSON Schema validator (`cms_python/testing/_schema.py`) gives the reference's verdicts.

The reference is `jsonschema` (Draft 2020-12, with its `FormatChecker`, so `email`, `uri` and `date-time` count),
corrected only where it misreads the standards the spec names; each correction says why. Hypothesis feeds both
the same generated bodies for the spec's `LeadPayload` and `SalePayload` and values for the `Idempotency-Key`
parameter, and they must find problems in the same fields (lengths included: `maxLength` counts code points);
hand-written edge cases pin the verdicts themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from cms_python._spec import load_spec
from cms_python.testing._schema import Validator

SPEC = load_spec()
SCHEMAS = SPEC["components"]["schemas"]
IDEMPOTENCY_KEY = SPEC["components"]["parameters"]["IdempotencyKey"]["schema"]


# --- the reference: jsonschema, corrected -------------------------------------------------------------------------

JSONSCHEMA_FORMATS = FormatChecker()
assert {"email", "uri", "date-time"} <= set(JSONSCHEMA_FORMATS.checkers), "pip install 'jsonschema[format-nongpl]'"


def conforms(value: str, format_name: str) -> bool:
    return JSONSCHEMA_FORMATS.conforms(value, format_name)


# email: jsonschema only looks for an "@" ("a b@", "@" and "x@y@z" pass), far laxer than what `format: email`
# means (JSON Schema 2020-12 §7.3.2: RFC 5321's Mailbox), and the SDK must refuse "jane" or "jane doe@x.com".
# So the reference is that grammar, written out below from the RFC's ABNF as a parser (the SDK's rule in
# cms_python/_formats.py is a regular expression), with RFC 6531's UTF-8 (non-ASCII characters may stand where
# letters may): such addresses exist, and the SDK sent them before it had this rule.
_ATEXT = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
_LET_DIG = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_HEX = "[0-9A-Fa-f]{1,4}"
_SNUM = "(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"  # 1 to 3 digits, 0 to 255
_IPV4 = rf"{_SNUM}(?:\.{_SNUM}){{3}}"


def _groups(count: int) -> str:
    return ":".join([_HEX] * count)


# IPv6-full, IPv6v4-full, and every IPv6-comp / IPv6v4-comp: `::` plus at most 6 (4 with IPv4) groups beside it.
_IPV6 = re.compile(
    "|".join(
        [
            _groups(8),
            f"{_groups(6)}:{_IPV4}",
            *(f"{_groups(left)}::{_groups(right)}" for left in range(7) for right in range(7 - left)),
            *(
                f"{_groups(left)}::{_groups(right) + ':' if right else ''}{_IPV4}"
                for left in range(5)
                for right in range(5 - left)
            ),
        ]
    )
)


def _non_ascii(character: str) -> bool:
    return ord(character) > 0x7F and not 0xD800 <= ord(character) <= 0xDFFF


def _is_local_part(text: str) -> bool:
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            return False
        inner, position = text[1:-1], 0
        while position < len(inner):
            character = inner[position]
            if character == "\\":  # quoted-pairSMTP: a backslash and any printable ASCII character or space
                if position + 1 == len(inner) or not 32 <= ord(inner[position + 1]) <= 126:
                    return False
                position += 2
                continue
            if not (32 <= ord(character) <= 126 and character != '"') and not _non_ascii(character):
                return False
            position += 1
        return True
    return all(atom and all(c in _ATEXT or _non_ascii(c) for c in atom) for atom in text.split("."))


def _is_domain(text: str) -> bool:
    def let_dig(character: str) -> bool:
        return character in _LET_DIG or _non_ascii(character)

    return all(
        label and let_dig(label[0]) and let_dig(label[-1]) and all(let_dig(c) or c == "-" for c in label)
        for label in text.split(".")
    )


def _is_address_literal(text: str) -> bool:
    if len(text) < 2 or text[0] != "[" or text[-1] != "]":
        return False
    inner = text[1:-1]
    if inner[:5].lower() == "ipv6:":
        return _IPV6.fullmatch(inner[5:]) is not None
    return re.fullmatch(_IPV4, inner) is not None


def reference_email(value: str) -> bool:
    local, at, domain = value.rpartition("@")  # neither a domain nor an IP literal holds an "@"
    mailbox = bool(at) and _is_local_part(local) and (_is_domain(domain) or _is_address_literal(domain))
    return mailbox and conforms(value, "email")


# uri: jsonschema's check (rfc3986-validator) ends its pattern with `$`, which also matches before a final
# newline, and its dec-octet takes leading zeros ("[::1.2.3.04]"), which RFC 3986's does not.
_LEADING_ZERO_OCTET_IN_IPV6 = re.compile(r"\[(?![vV])[^\]]*(?::0[0-9]+\.|\.0[0-9])")


def reference_uri(value: str) -> bool:
    return conforms(value, "uri") and not value.endswith("\n") and not _LEADING_ZERO_OCTET_IN_IPV6.search(value)


# date-time: jsonschema's check (rfc3339-validator) refuses every leap second, which RFC 3339 allows where one
# is inserted: at 23:59:60 UTC, whatever the local offset (as the JSON-Schema-Test-Suite reads it); and its `$`
# also matches before a final newline.
_LEAP_SECOND = re.compile(r"(.*[Tt](\d\d):(\d\d):)60(.*?([Zz]|([+-])(\d\d):(\d\d)))")


def reference_date_time(value: str) -> bool:
    if value.endswith("\n"):
        return False
    leap = _LEAP_SECOND.fullmatch(value)
    if leap is None:
        return conforms(value, "date-time")
    if not conforms(f"{leap[1]}59{leap[4]}", "date-time"):
        return False
    sign = -1 if leap[6] == "-" else 1
    offset = timedelta(hours=int(leap[7] or 0), minutes=int(leap[8] or 0)) * sign
    return (datetime(2000, 1, 1, int(leap[2]), int(leap[3])) - offset).time() == time(23, 59)


REFERENCE_FORMATS = FormatChecker()
for _name, _check in [("email", reference_email), ("uri", reference_uri), ("date-time", reference_date_time)]:
    # A format says nothing about values of other types.
    REFERENCE_FORMATS.checks(_name)(lambda value, check=_check: not isinstance(value, str) or check(value))


# pattern: jsonschema matches with Python's `re`, whose `$` also matches before a final newline ("USD\n" would
# pass "^[A-Z]{3}$"); JSON Schema patterns are ECMA-262 regular expressions, whose `$` does not.
def ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not re.search(pattern.replace("$", r"\Z"), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield node["pattern"]
        for child in node.values():
            yield from _patterns(child)
    elif isinstance(node, list):
        for child in node:
            yield from _patterns(child)


# Replacing "$" by "\Z" is right for patterns with "$" only as their last character and no escapes.
assert all(re.fullmatch(r"[^$\\]*\$?", pattern) for pattern in _patterns(SPEC)), list(_patterns(SPEC))
ReferenceValidator = validators.extend(Draft202012Validator, {"pattern": ecma_pattern})


def reference_problems(document: dict[str, Any], pointer: str, value: Any) -> set[str]:
    """The fields the reference finds a problem in: a property's name, or "body" for the value itself."""
    schema = {"$ref": f"urn:spec#{pointer}"}
    registry = Registry().with_resource("urn:spec", Resource.from_contents(document, default_specification=DRAFT202012))
    fields = set()
    for error in ReferenceValidator(schema, registry=registry, format_checker=REFERENCE_FORMATS).iter_errors(value):
        if error.validator == "required":
            fields |= set(error.validator_value) - set(error.instance)
        elif error.validator == "additionalProperties":
            fields |= set(error.instance) - set(error.schema.get("properties", {}))
        else:
            fields.add(str(error.absolute_path[0]) if error.absolute_path else "body")
    return fields


def sandbox_problems(document: dict[str, Any], pointer: str, value: Any) -> set[str]:
    validator = Validator(document)
    return set(validator.problems(validator.resolve(f"#{pointer}"), value))


# --- strategies ---------------------------------------------------------------------------------------------------

# Characters that matter to the grammars, and a few that must never pass.
URI_CHARACTERS = "aZ09fF-._~!$&'()*+,;=:@/?#[]%vV" + ' "<>\\^`{|}\n\tü'
EMAIL_CHARACTERS = "aZ09.!#$%&'*+-/=?^_`{|}~@\"\\[]():;<>, \tü日\x7f\x00"
DATE_TIME_CHARACTERS = "0123456789-:.TtZz+ \n٢"


def mutated(base: st.SearchStrategy[str], alphabet: str) -> st.SearchStrategy[str]:
    """`base`'s strings, sometimes with a character inserted, deleted or replaced."""

    @st.composite
    def mutate(draw: st.DrawFn) -> str:
        text = draw(base)
        for _ in range(draw(st.integers(0, 2))):
            position = draw(st.integers(0, len(text)))
            action = draw(st.sampled_from(["insert", "delete", "replace"]))
            character = draw(st.sampled_from(alphabet))
            if action == "insert":
                text = text[:position] + character + text[position:]
            elif text:
                position = min(position, len(text) - 1)
                text = text[:position] + ("" if action == "delete" else character) + text[position + 1 :]
        return text

    return mutate()


def _text(alphabet: str, max_size: int = 6) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(alphabet), max_size=max_size)


LABEL = r"[a-z0-9](?:[a-z0-9-]{0,6}[a-z0-9])?"
DOMAIN_NAME = st.from_regex(rf"{LABEL}(?:\.{LABEL}){{0,3}}", fullmatch=True)
HEXISH = _text("0123456789abcdefABCDEF:.", 24)
IPV4ISH = st.one_of(
    st.builds("{}.{}.{}.{}".format, *[st.integers(0, 300).map(str) | st.sampled_from(["00", "01", "001"])] * 4),
    _text("0123456789.", 16),
)
H16ISH = st.from_regex(r"[0-9a-fA-F]{1,5}", fullmatch=True)
IPV4_TAIL = st.one_of(st.just(""), st.builds(":{}".format, IPV4ISH))
IPV6ISH = st.one_of(
    st.builds("{}{}".format, st.lists(H16ISH, min_size=5, max_size=9).map(":".join), IPV4_TAIL),
    st.builds(
        "{}::{}{}".format,
        st.lists(H16ISH, max_size=7).map(":".join),
        st.lists(H16ISH, max_size=7).map(":".join),
        IPV4_TAIL,
    ),
    st.ip_addresses(v=6).map(str),
    st.builds("{}:{}".format, st.ip_addresses(v=6).map(str).filter(lambda a: a.endswith("::")), IPV4ISH),
    st.builds("{}{}".format, HEXISH, st.sampled_from(["", ":1.2.3.4", "::1.2.3.04"])),
)
LOCAL_PART = st.one_of(
    st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,6}(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,6}){0,2}", fullmatch=True),
    st.builds('"{}"'.format, _text(' a@."\\()[]ü\x7f', 6)),
    _text("abc.ü日 ", 6),
)
DOMAIN = st.one_of(
    DOMAIN_NAME,
    _text("ab-0.ü_", 8),
    st.builds("[{}]".format, IPV4ISH),
    st.builds("[IPv6:{}]".format, IPV6ISH),
    st.builds("[ipv6:{}]".format, IPV6ISH),
    st.builds("[{}]".format, _text("IPv6:x.1", 8)),
)
EMAILS = st.one_of(
    st.builds("{}@{}".format, LOCAL_PART, DOMAIN),
    mutated(st.builds("{}@{}".format, LOCAL_PART, DOMAIN), EMAIL_CHARACTERS),
    _text(EMAIL_CHARACTERS, 10),
)

HOST = st.one_of(
    DOMAIN_NAME,
    st.ip_addresses(v=4).map(str),
    st.builds("[{}]".format, IPV6ISH),
    st.builds("[v{}.{}]".format, _text("0123456789aF", 3), _text("a:1.!", 4)),
    _text("ab[]:%20.", 6),
)
URIS = st.one_of(
    st.builds(
        "{}:{}{}{}{}{}{}".format,
        st.from_regex(r"[A-Za-z][A-Za-z0-9+.-]{0,4}", fullmatch=True) | _text("a1+:", 3),
        st.sampled_from(["//", "", "/", "///"]),
        st.one_of(st.just(""), st.builds("{}@".format, _text("u:%20@[", 5))),
        HOST,
        st.one_of(st.just(""), st.builds(":{}".format, _text("0123456789port", 5))),
        st.lists(st.builds("/{}".format, _text("a%2Fz20.~:@!ü ", 5)), max_size=3).map("".join),
        st.sampled_from(["", "?", "#", "?a=1#top", "#a#b", "?q=[x]", "#%zz", "?\n"]),
    ),
    mutated(st.sampled_from(["https://example.com/a.png?s=64#top", "mailto:jane@example.com"]), URI_CHARACTERS),
    _text(URI_CHARACTERS, 12),
)

_TWO_DIGITS = st.integers(0, 61).map("{:02d}".format)
DATE_TIMES = mutated(
    st.builds(
        "{}-{}-{}{}{}:{}:{}{}{}".format,
        st.sampled_from(["0000", "1998", "2016", "2024", "2100", "9999"]),
        st.integers(0, 13).map("{:02d}".format),
        st.integers(0, 32).map("{:02d}".format),
        st.sampled_from(["T", "t", " "]),
        st.integers(0, 24).map("{:02d}".format),
        _TWO_DIGITS,
        _TWO_DIGITS | st.just("60"),
        st.sampled_from(["", ".1", ".123456", "."]),
        st.one_of(
            st.sampled_from(["Z", "z", ""]),
            st.builds("{}{}:{}".format, st.sampled_from("+-"), st.integers(0, 24).map("{:02d}".format), _TWO_DIGITS),
        ),
    ),
    DATE_TIME_CHARACTERS,
)

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.sampled_from([0, -1, 2**53 - 1, 2**53, 4999.0, -0.0, 1e20, 49.99, 2.0**53]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
TEXT = st.one_of(st.text(max_size=8), st.just(""), st.text(st.characters(codec="utf-8"), min_size=250, max_size=260))


def field_values(name: str) -> st.SearchStrategy[Any]:
    """What a field of the payloads might hold: mostly strings of its kind, sometimes anything at all."""
    typical: st.SearchStrategy[Any] = {
        "customerEmail": EMAILS,
        "customerAvatar": URIS | st.integers(2020, 2040).map(lambda n: "https://example.com/" + "a" * n),
        "timestamp": DATE_TIMES,
        "mode": st.sampled_from(["deferred", "Deferred", "deferred\n", "later", ""]),
        "currency": st.one_of(_text("USDusdÄ\n", 4), st.sampled_from(["USD", "EUR", "usd", "USD\n", "US"])),
        "amount": JSON_SCALARS,
    }.get(name, TEXT)
    return st.one_of(typical, typical, typical, ANY_JSON)


def bodies(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    properties = sorted(schema["properties"])
    objects = st.fixed_dictionaries(
        {},
        optional={
            **{name: field_values(name) for name in properties},
            "extra": ANY_JSON,
            "click_id": TEXT,
        },
    )
    return st.one_of(objects, objects, objects, ANY_JSON)


BODIES = {name: bodies(SCHEMAS[name]) for name in ("LeadPayload", "SalePayload")}
# The same examples at every run, as in test_fuzz.py: a run that fails can be run again, and CI's verdict is the
# code's, not the draw's.
EQUAL = settings(
    max_examples=400, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# --- the sandbox's verdicts equal the reference's ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["LeadPayload", "SalePayload"])
@given(data=st.data())
@EQUAL
def test_the_same_fields_are_refused_as_by_jsonschema(name, data):
    body = data.draw(BODIES[name], label="body")
    pointer = f"/components/schemas/{name}"
    assert sandbox_problems(SPEC, pointer, body) == reference_problems(SPEC, pointer, body)


@given(key=st.one_of(st.text(max_size=300), st.text(st.characters(codec="utf-8"), min_size=250, max_size=260)))
@EQUAL
def test_the_idempotency_key_is_checked_as_by_jsonschema(key):
    pointer = "/components/parameters/IdempotencyKey/schema"
    assert sandbox_problems(SPEC, pointer, key) == reference_problems(SPEC, pointer, key)


@given(value=EMAILS)
@EQUAL
def test_emails_as_the_reference(value):
    assert (sandbox_problems(SPEC, "/components/schemas/LeadPayload/properties/customerEmail", value) == set()) is (
        reference_email(value)
    )


@given(value=URIS)
@EQUAL
def test_uris_as_the_reference(value):
    assert (sandbox_problems(SPEC, "/components/schemas/LeadPayload/properties/customerAvatar", value) == set()) is (
        reference_uri(value)
    )


@given(value=DATE_TIMES)
@EQUAL
def test_date_times_as_the_reference(value):
    assert (sandbox_problems(SPEC, "/components/schemas/LeadPayload/properties/timestamp", value) == set()) is (
        reference_date_time(value)
    )


# --- edges, by hand -------------------------------------------------------------------------------------------------

LEAD = {"eventName": "e", "customerExternalId": "u"}
SALE = {**LEAD, "invoiceId": "i", "amount": 4999, "currency": "USD"}


def _edge_id(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v!r}" for k, v in value.items() if (LEAD | SALE).get(k, None) != v) or "base"
    return repr(value)


@pytest.mark.parametrize(
    ("name", "body", "refused"),
    [
        # The issue's cases: URIs jsonschema refuses, emails it accepts.
        ("LeadPayload", {**LEAD, "customerAvatar": "http://[::1"}, {"customerAvatar"}),
        ("LeadPayload", {**LEAD, "customerAvatar": "http://x:port/"}, {"customerAvatar"}),
        ("LeadPayload", {**LEAD, "customerAvatar": "http://x:notaport/"}, {"customerAvatar"}),
        ("LeadPayload", {**LEAD, "customerAvatar": "https://u:p@h/#a#b"}, {"customerAvatar"}),
        ("LeadPayload", {**LEAD, "customerEmail": "jane@localhost"}, set()),
        ("LeadPayload", {**LEAD, "customerEmail": '"j d"@example.com'}, set()),
        # Where the reference corrects jsonschema.
        ("LeadPayload", {**LEAD, "customerEmail": "jane"}, {"customerEmail"}),
        ("LeadPayload", {**LEAD, "customerEmail": "jane doe@example.com"}, {"customerEmail"}),
        ("LeadPayload", {**LEAD, "customerEmail": "jösé@bücher.de"}, set()),
        ("LeadPayload", {**LEAD, "customerAvatar": "https://example.com/\n"}, {"customerAvatar"}),
        ("LeadPayload", {**LEAD, "customerAvatar": "http://[::1.2.3.04]/"}, {"customerAvatar"}),
        ("LeadPayload", {**LEAD, "customerAvatar": "http://[v1.01]/"}, set()),
        ("LeadPayload", {**LEAD, "timestamp": "2016-12-31T23:59:60Z"}, set()),
        ("LeadPayload", {**LEAD, "timestamp": "2016-12-31T15:59:60.5-08:00"}, set()),
        ("LeadPayload", {**LEAD, "timestamp": "2016-12-31T22:59:60Z"}, {"timestamp"}),
        ("LeadPayload", {**LEAD, "timestamp": "2016-12-31T23:59:61Z"}, {"timestamp"}),
        ("LeadPayload", {**LEAD, "timestamp": "2024-05-01T12:00:00Z\n"}, {"timestamp"}),
        ("SalePayload", {**SALE, "currency": "USD\n"}, {"currency"}),
        # Numbers: JSON has one number type.
        ("SalePayload", {**SALE, "amount": 4999.0}, set()),
        ("SalePayload", {**SALE, "amount": True}, {"amount"}),
        ("SalePayload", {**SALE, "amount": 2**53}, {"amount"}),
        ("SalePayload", {**SALE, "amount": -0.0}, set()),
        # Lengths count code points: one astral character is one, a lone surrogate is one.
        ("LeadPayload", {**LEAD, "eventName": "\U0001f600" * 255}, set()),
        ("LeadPayload", {**LEAD, "eventName": "\U0001f600" * 256}, {"eventName"}),
        ("LeadPayload", {**LEAD, "customerAvatar": "https://example.com/" + "a" * 2028}, set()),
        ("LeadPayload", {**LEAD, "customerAvatar": "https://example.com/" + "a" * 2029}, {"customerAvatar"}),
        ("LeadPayload", {**LEAD, "eventName": "\ud800"}, set()),
        ("LeadPayload", [LEAD], {"body"}),
        ("LeadPayload", {**LEAD, "mode": "deferred", "extra": 1}, {"extra"}),
    ],
    ids=_edge_id,
)
def test_edges(name, body, refused):
    pointer = f"/components/schemas/{name}"
    assert reference_problems(SPEC, pointer, body) == refused
    assert sandbox_problems(SPEC, pointer, body) == refused


@pytest.mark.parametrize(
    ("key", "refused"),
    [("", {"body"}), ("k", set()), ("k" * 255, set()), ("k" * 256, {"body"}), ("\U0001f600" * 255, set())],
    ids=["empty", "one", "255", "256", "255-astral"],
)
def test_idempotency_key_edges(key, refused):
    pointer = "/components/parameters/IdempotencyKey/schema"
    assert reference_problems(SPEC, pointer, key) == refused
    assert sandbox_problems(SPEC, pointer, key) == refused


# --- the validator's own contract -----------------------------------------------------------------------------------


def test_the_validator_supports_every_keyword_of_the_request_schemas():
    validator = Validator(SPEC)
    optional = {
        "customerName": "Jane",
        "customerEmail": "jane@example.com",
        "customerAvatar": "https://example.com/a.png",
        "timestamp": "2024-05-01T12:00:00Z",
    }
    # Every property visited (an unknown keyword would raise ValueError), and no problem with valid bodies.
    for name, body in (
        ("LeadPayload", {**LEAD, "clickId": "c", **optional, "mode": "deferred"}),
        ("SalePayload", {**SALE, "clickId": "c", **optional}),
    ):
        schema = validator.resolve(f"#/components/schemas/{name}")
        assert set(body) == set(schema["properties"])
        assert validator.problems(schema, body) == {}
    assert validator.problems(IDEMPOTENCY_KEY, "k") == {}


@pytest.mark.parametrize(
    "schema", [{"oneOf": [{"type": "string"}]}, {"type": "string", "format": "ipv4"}, {"type": "decimal"}]
)
def test_the_validator_refuses_what_it_does_not_know(schema):
    with pytest.raises(ValueError, match="unsupported"):
        Validator({}).problems(schema, "1.2.3.4")


def test_the_validator_reports_nested_fields_by_path():
    schema = {
        "type": "object",
        "properties": {"customer": {"type": "object", "required": ["id"], "additionalProperties": False}},
    }
    assert Validator({}).problems(schema, {"customer": {"x": 1}}) == {
        "customer.id": "is required",
        "customer.x": "is not allowed",
    }
