"""Bad argument values come back as a `validation_error` dict and send nothing; bad keyword names raise TypeError."""

from __future__ import annotations

import inspect
import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest

from cms_python import AsyncCMSClient, CMSClient

from ..conftest import LEAD, SALE
from ..support import ROOT

LEADS_PAGE = (ROOT / "docs" / "leads.md").read_text(encoding="utf-8")

BASE = {"track_lead": LEAD, "track_sale": SALE}
BOTH = ["track_lead", "track_sale"]
TEXT_FIELDS = {
    "track_lead": ["event_name", "customer_external_id", "click_id", "customer_name", "customer_email"],
    "track_sale": ["event_name", "customer_external_id", "invoice_id", "click_id", "customer_name", "customer_email"],
}


def call(client: Any, method: str, **overrides: Any) -> Any:
    return getattr(client, method)(**{**BASE[method], **overrides})


def mismatches(result: Any, server: Any, *fields: str) -> list[str]:
    """What differs from the validation error dict naming exactly `fields` (keyword names) with nothing sent."""
    found = []
    if not isinstance(result, dict) or set(result) != {"success", "error", "status_code", "type", "details"}:
        return [f"not an error dict: {result!r}"]
    if (result["success"], result["type"], result["status_code"]) != (False, "validation_error", None):
        found.append(f"not a validation error: {result!r}")
    if not isinstance(result["details"], dict) or set(result["details"]) != set(fields):
        found.append(f"details should name {sorted(fields)}: {result['details']!r}")
    elif not all(isinstance(problem, str) and problem for problem in result["details"].values()):
        found.append(f"details should explain each problem: {result['details']!r}")
    if not isinstance(result["error"], str) or not all(field in result["error"] for field in fields):
        found.append(f"error should name {sorted(fields)}: {result['error']!r}")
    if server.requests:
        found.append(f"{len(server.requests)} request(s) sent")
    return found


def assert_rejected(result: Any, server: Any, *fields: str) -> None:
    assert mismatches(result, server, *fields) == []


def assert_all_rejected(client: Any, server: Any, method: str, field: str, values: list[Any]) -> None:
    """Each value of `field` is rejected on its own (one test per field keeps the suite fast)."""
    failures = {}
    for value in values:
        found = mismatches(call(client, method, **{field: value}), server, field)
        if found:
            failures[repr(value)] = found
    assert failures == {}


REQUIRED_TEXT = ["", "   ", "\t\n", 123, None, b"user_42", ["x"]]
BAD_VALUES = {
    # required text: empty, blank, not a str
    ("track_lead", "event_name"): REQUIRED_TEXT,
    ("track_lead", "customer_external_id"): REQUIRED_TEXT,
    ("track_sale", "event_name"): REQUIRED_TEXT,
    ("track_sale", "customer_external_id"): REQUIRED_TEXT,
    ("track_sale", "invoice_id"): REQUIRED_TEXT,
    # lead mode: only "deferred"
    ("track_lead", "mode"): ["DEFERRED", "instant", "Deferred", "deferred ", "", True, 1],
    # sale amount: a non-negative int number of cents, not a bool, at most 2**53 - 1
    ("track_sale", "amount"): [-1, 1.5, 49.99, 4999.0, True, False, "4999", None, 2**53, float("nan")],
    # sale currency: 3 letters
    ("track_sale", "currency"): ["US", "USDD", "U$D", "US1", "", " USD", 840, None, b"USD"],
    # optional values: present but bad
    **{
        (method, field): values
        for method in BOTH
        for field, values in {
            "click_id": ["", "   ", 123, b"id_123"],
            "customer_name": [5, b"Jane"],
            "customer_email": ["not-an-email", "jane@", "@example.com", "jane doe@example.com", "", 7],
            "customer_avatar": ["ftp://x", "not a url", "https://", "javascript:alert(1)", "", 3],
            "timestamp": [
                datetime(2024, 5, 1, 12, 30),  # naive
                date(2024, 5, 1),
                "2024-05-01T12:30:00+00:00",
                1714566600,
            ],
            "idempotency_key": ["", "a\nb", "a b", "ключ", "k" * 256, 123, b"key"],
        }.items()
    },
}


@pytest.mark.parametrize(
    ("method", "field"), [pytest.param(method, field, id=f"{method}-{field}") for method, field in BAD_VALUES]
)
def test_bad_values_are_rejected_before_sending(client, server, method, field):
    assert_all_rejected(client, server, method, field, BAD_VALUES[method, field])


@pytest.mark.parametrize("method", BOTH)
def test_control_characters_and_lone_surrogates_are_rejected(client, server, method):
    failures = {}
    for field in TEXT_FIELDS[method]:
        # C0 and C1 controls (NEL, CSI), DEL, Unicode's line and paragraph separators, a lone surrogate.
        for bad in ("\r\n", "\x00", "\n", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\ud800"):
            value = f"jane{bad}@example.com" if field == "customer_email" else f"value{bad}X-Injected: 1"
            found = mismatches(call(client, method, **{field: value}), server, field)
            if found:
                failures[field, bad] = found
    assert failures == {}


def test_deferred_mode_needs_a_click_id(client, server):
    result = client.track_lead(event_name="lead_captured", customer_external_id="user_42", mode="deferred")
    assert result["type"] == "validation_error"
    assert result["status_code"] is None
    assert set(result["details"]) & {"mode", "click_id"}
    assert server.requests == []
    # A follow-up event sent with mode="deferred" (as CutMeShort's TypeScript SDK's example does): say what to do.
    assert "leave mode out on follow-up events of a deferred flow" in result["details"]["mode"]


def test_the_docs_show_the_deferred_follow_up_message(client, server):
    result = client.track_lead(event_name="kyc_completed", customer_external_id="user_42", mode="deferred")
    shown = re.search(r'result\["details"\]\["mode"\]\n# \'(.*?)\'\n```', LEADS_PAGE, re.DOTALL)
    assert shown is not None
    assert result["details"]["mode"] == shown[1].replace("\n#  ", " ")


def test_several_bad_fields_are_all_named(client, server):
    result = client.track_sale(
        event_name="",
        customer_external_id=None,
        invoice_id="inv_1",
        amount=-1,
        currency="US",
        customer_email="nope",
        timestamp=datetime(2024, 1, 1),
    )
    assert_rejected(result, server, "event_name", "customer_external_id", "amount", "currency", "customer_email",
                    "timestamp")  # fmt: skip


def test_several_bad_lead_fields_are_all_named(client, server):
    result = client.track_lead(
        event_name=" ", customer_external_id="u", click_id="", mode="instant", customer_avatar="x", idempotency_key=""
    )
    assert_rejected(result, server, "event_name", "click_id", "mode", "customer_avatar", "idempotency_key")


@pytest.mark.parametrize(
    ("method", "overrides"),
    [
        pytest.param("track_sale", {"amount": 0}, id="amount-0"),
        pytest.param("track_sale", {"amount": 2**53 - 1}, id="amount-max"),
        pytest.param("track_sale", {"currency": "usd"}, id="currency-lower"),
        pytest.param("track_sale", {"click_id": None}, id="sale-no-click"),
        pytest.param("track_lead", {"click_id": None}, id="lead-no-click"),
        pytest.param("track_lead", {"mode": None}, id="mode-none"),
        pytest.param("track_lead", {"mode": "deferred"}, id="mode-deferred"),
        pytest.param("track_lead", {"customer_name": "Zoë 日本"}, id="unicode-name"),
        pytest.param("track_lead", {"customer_email": "jane+tag@mail.example.co.uk"}, id="plus-email"),
        pytest.param("track_lead", {"customer_avatar": "http://example.com/a.png"}, id="http-avatar"),
        pytest.param("track_lead", {"timestamp": datetime(2024, 1, 1, tzinfo=timezone.utc)}, id="aware"),
        pytest.param("track_lead", {"idempotency_key": "k" * 255}, id="key-255"),
        pytest.param("track_sale", {"idempotency_key": "order-987/retry:1"}, id="key-punctuation"),
    ],
)
def test_good_edge_values_are_sent(client, server, method, overrides):
    result = call(client, method, **overrides)
    assert result["success"] is True, result
    assert len(server.requests) == 1


# --- wrong keyword names: a programming error, raised --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        pytest.param("track_lead", {**LEAD, "clickid": "id_123"}, id="lead-unknown-clickid"),
        pytest.param("track_lead", {**LEAD, "eventName": "x"}, id="lead-camel-case"),
        pytest.param("track_lead", {**LEAD, "amount": 1}, id="lead-sale-keyword"),
        pytest.param("track_lead", {"click_id": "id_123", "event_name": "x"}, id="lead-missing-customer"),
        pytest.param("track_lead", {}, id="lead-nothing"),
        pytest.param("track_sale", {**SALE, "invoiceid": "x"}, id="sale-unknown-invoiceid"),
        pytest.param("track_sale", {**SALE, "mode": "deferred"}, id="sale-mode"),
        pytest.param("track_sale", {k: v for k, v in SALE.items() if k != "amount"}, id="sale-missing-amount"),
        pytest.param("track_sale", {k: v for k, v in SALE.items() if k != "invoice_id"}, id="sale-missing-invoice"),
    ],
)
def test_wrong_keyword_names_raise_type_error(client, server, method, kwargs):
    with pytest.raises(TypeError):
        getattr(client, method)(**kwargs)
    assert server.requests == []


@pytest.mark.parametrize("method", BOTH)
def test_positional_arguments_raise_type_error(face, client, server, method):
    with pytest.raises(TypeError):
        face.run(getattr(client.raw, method)(*BASE[method].values()))
    assert server.requests == []


@pytest.mark.parametrize("cls", [CMSClient, AsyncCMSClient])
@pytest.mark.parametrize(
    ("method", "required", "optional"),
    [
        (
            "track_lead",
            ["event_name", "customer_external_id"],
            ["click_id", "customer_name", "customer_email", "customer_avatar", "timestamp", "mode", "idempotency_key"],
        ),
        (
            "track_sale",
            ["event_name", "customer_external_id", "invoice_id", "amount", "currency"],
            ["click_id", "customer_name", "customer_email", "customer_avatar", "timestamp", "idempotency_key"],
        ),
    ],
)
def test_signatures_show_the_readme_keywords(cls, method, required, optional):
    parameters = list(inspect.signature(getattr(cls, method)).parameters.values())[1:]  # after self
    assert all(parameter.kind is inspect.Parameter.KEYWORD_ONLY for parameter in parameters)
    assert [p.name for p in parameters if p.default is inspect.Parameter.empty] == required
    assert {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty} == dict.fromkeys(
        optional
    )


class AmbiguousTruth:
    """Like pandas.NA: comparing is fine, asking whether the comparison is true raises."""

    def __eq__(self, other: object) -> AmbiguousTruth:  # type: ignore[override]
        return self

    __ne__ = __eq__  # type: ignore[assignment]

    def __bool__(self) -> bool:
        raise TypeError("boolean value of NA is ambiguous")

    __hash__ = object.__hash__


@pytest.mark.parametrize("field", ["customer_name", "mode", "click_id", "customer_email"])
def test_values_with_ambiguous_truth_are_validation_errors(client, server, field):
    result = client.track_lead(**{**LEAD, field: AmbiguousTruth()})
    assert result["type"] == "validation_error"
    assert field in result["details"]
    assert server.requests == []


# --- caller's objects that misbehave: converted to exact built-in types once, checked, sent as checked ---------


class Explosive(str):
    """A str whose every method a check could call raises."""

    def _explode(self, *args: object, **kwargs: object) -> Any:
        raise RuntimeError("boom")

    strip = isascii = encode = upper = __ne__ = __eq__ = __len__ = __hash__ = __iter__ = __str__ = _explode


class Disguised(str):
    """A str that says it is another one wherever it can."""

    disguise: str

    def __new__(cls, value: str, disguise: str = "instant\r\nX-Injected: 1") -> Disguised:
        instance = super().__new__(cls, value)
        instance.disguise = disguise
        return instance

    def __str__(self) -> str:
        return self.disguise

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__

    def upper(self) -> str:  # type: ignore[override]
        return self.disguise


class Touchy(int):
    """An int whose comparisons raise."""

    def _explode(self, other: object) -> bool:
        raise RuntimeError("boom")

    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _explode  # type: ignore[assignment]
    __hash__ = int.__hash__


class Liar(int):
    """An int whose comparisons and conversions say it is small."""

    def _small(self, other: object) -> bool:
        return True

    __le__ = __ge__ = _small  # type: ignore[assignment]

    def __lt__(self, other: object) -> bool:
        return False

    __gt__ = __lt__  # type: ignore[assignment]

    def __int__(self) -> int:
        return 1

    __index__ = __int__


class Vague(datetime):
    """A datetime that formats itself as it likes."""

    def isoformat(self, *args: object, **kwargs: object) -> str:
        return "yesterday-ish"

    def utcoffset(self) -> timedelta | None:
        raise RuntimeError("boom")


class Raising(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        raise RuntimeError("no offset today")

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None


class Fickle(tzinfo):
    """Answers +02:00 once, then raises."""

    def __init__(self) -> None:
        self.calls = 0

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("changed my mind")
        return timedelta(hours=2)

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None


class NamelessMeta(type):
    """Its classes' `__name__` raises while `armed` (only then: pytest reports failures by type name)."""

    armed = False

    @property
    def __name__(cls) -> str:  # type: ignore[override]
        if NamelessMeta.armed:
            raise RuntimeError("no name")
        return "Nameless"


class Nameless(metaclass=NamelessMeta):
    pass


class ClaimsToBeStr:
    """isinstance(x, str) says True: it answers `__class__` with str."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # type: ignore[override]
        return str


def sent(server: Any) -> dict[str, Any]:
    (request,) = server.requests
    body: dict[str, Any] = request.json
    return body


@pytest.mark.parametrize("field", ["event_name", "customer_external_id", "click_id", "customer_name"])
def test_a_str_subclass_whose_methods_raise_is_sent_as_its_text(client, server, field):
    result = client.track_lead(**{**LEAD, field: Explosive("user_99")})
    assert result["success"] is True, result
    camel = {"event_name": "eventName", "customer_external_id": "customerExternalId", "click_id": "clickId"}
    assert sent(server)[camel.get(field, "customerName")] == "user_99"


def test_a_str_subclass_with_a_lying_str_is_sent_as_its_text(client, server):
    result = client.track_sale(
        **{
            **SALE,
            "invoice_id": Disguised("inv_1"),
            "currency": Disguised("usd", "DOLLARS"),
            "idempotency_key": Disguised("key-1", "ключ\r\nX-Injected: 1"),
        }
    )
    assert result["success"] is True, result
    assert (sent(server)["invoiceId"], sent(server)["currency"]) == ("inv_1", "USD")
    assert {name.lower(): value for name, value in server.requests[0].headers.items()}["idempotency-key"] == "key-1"


def test_a_str_subclass_cannot_pass_for_deferred(client, server):
    result = client.track_lead(**{**LEAD, "mode": Disguised("instant", "deferred")})
    assert_rejected(result, server, "mode")


def test_a_bad_idempotency_key_cannot_hide_behind_its_str(client, server):
    result = client.track_lead(**{**LEAD, "idempotency_key": Disguised("bad\r\nkey", "good-key")})
    assert_rejected(result, server, "idempotency_key")


def test_an_int_subclass_whose_comparisons_raise_is_sent_as_its_value(client, server):
    result = client.track_sale(**{**SALE, "amount": Touchy(4999)})
    assert result["success"] is True, result
    assert sent(server)["amount"] == 4999


def test_an_amount_whose_comparisons_lie_is_checked_by_its_value(client, server):
    assert_rejected(client.track_sale(**{**SALE, "amount": Liar(2**70)}), server, "amount")


def test_a_datetime_subclass_is_sent_as_the_moment_it_holds(client, server):
    moment = Vague(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=-3)))
    result = client.track_lead(**{**LEAD, "timestamp": moment})
    assert result["success"] is True, result
    assert sent(server)["timestamp"] == "2024-05-01T12:30:00-03:00"


def test_a_tzinfo_that_raises_is_a_validation_error(client, server):
    result = client.track_lead(**{**LEAD, "timestamp": datetime(2024, 5, 1, tzinfo=Raising())})
    assert_rejected(result, server, "timestamp")
    assert "RuntimeError" in result["details"]["timestamp"]


def test_a_tzinfo_asked_once_is_sent_with_that_answer(client, server):
    result = client.track_lead(**{**LEAD, "timestamp": datetime(2024, 5, 1, 12, tzinfo=Fickle())})
    assert result["success"] is True, result
    assert sent(server)["timestamp"] == "2024-05-01T12:00:00+02:00"


TYPED_FIELDS = [
    ("track_lead", "event_name"),
    ("track_lead", "mode"),
    ("track_lead", "timestamp"),
    ("track_sale", "amount"),
    ("track_sale", "currency"),
    ("track_sale", "idempotency_key"),
]


@pytest.mark.parametrize(("method", "field"), TYPED_FIELDS)
def test_an_object_claiming_to_be_a_str_is_a_validation_error(client, server, method, field):
    assert_rejected(call(client, method, **{field: ClaimsToBeStr()}), server, field)


@pytest.mark.parametrize(("method", "field"), TYPED_FIELDS)
def test_an_object_whose_type_name_raises_is_a_validation_error(client, server, method, field):
    NamelessMeta.armed = True
    try:
        result = call(client, method, **{field: Nameless()})
    finally:
        NamelessMeta.armed = False
    assert_rejected(result, server, field)
