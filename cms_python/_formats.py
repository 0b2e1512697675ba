"""The email, URI and timestamp rules: one definition for the SDK's argument checks, the sandbox's request checks,
and the timestamps the `cms` commands and `import_events` read from text.

Both follow the standards the spec's `format: email` and `format: uri` name (JSON Schema 2020-12 §7.3), written
out from their ABNF so the two sides can never disagree:

- `is_email`: an RFC 5321 `Mailbox` (`jane@example.com`, `jane@localhost`, `"j d"@example.com`,
  `jane@[192.0.2.1]`, `jane@[IPv6:2001:db8::1]`), with RFC 6531's UTF-8 extension: non-ASCII characters may
  stand where letters may (`jösé@bücher.de`), since such addresses exist and refusing one would lose the whole
  event over an optional field. Lengths are not limited here (the spec's `maxLength` does that).
- `is_uri`: an RFC 3986 absolute `URI`, query and fragment included (`https://example.com/a.png?s=64#top`,
  `mailto:jane@example.com`); anything else, non-ASCII characters among them, must be percent-encoded.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache

from ._printable import quoted

# -- RFC 5321 §4.1.2 (Mailbox), RFC 5322 §3.2.3 (atext), RFC 6531 §3.3 (UTF-8) -----------------------------------

# RFC 6531's UTF8-non-ascii: any character above ASCII that UTF-8 can encode (so not a lone surrogate).
_NON_ASCII = "\x80-\ud7ff\ue000-\U0010ffff"
_ATEXT = rf"[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~{_NON_ASCII}]"
# A quoted local part holds printable ASCII and spaces; `"` and `\` only escaped as quoted pairs.
_QUOTED_STRING = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_NON_ASCII}]|\\[\x20-\x7e])*"'
_LET_DIG = rf"[A-Za-z0-9{_NON_ASCII}]"
_SUB_DOMAIN = rf"{_LET_DIG}(?:[A-Za-z0-9\-{_NON_ASCII}]*{_LET_DIG})?"
_LOCAL_PART = rf"(?:{_ATEXT}+(?:\.{_ATEXT}+)*|{_QUOTED_STRING})"


@cache
def _mailbox() -> re.Pattern[str]:
    # Compiled on first use: its wide character classes take ~30 ms to compile, which `import cms_python` would pay.
    # Kept by @cache, not left to `re`'s own cache as the SDK's small patterns are: that cache is bounded, and an
    # app's other patterns could evict this one, to cost 30 ms again.
    # An address literal's content is checked apart: `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
    return re.compile(rf"{_LOCAL_PART}@(?:{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*|\[(?P<literal>[^\[\]\\]*)\])")


_SNUM = r"[0-9]{1,3}"
_IPV4_LITERAL = re.compile(rf"{_SNUM}(?:\.{_SNUM}){{3}}")
_IPV6_HEX = re.compile(r"[0-9A-Fa-f]{1,4}")


def is_email(value: str) -> bool:
    """Whether `value` is an email address (RFC 5321 `Mailbox`, UTF-8 allowed as in RFC 6531)."""
    match = _mailbox().fullmatch(value)
    if match is None:
        return False
    literal = match.group("literal")
    return literal is None or _is_address_literal(literal)


def _is_address_literal(text: str) -> bool:
    # Of RFC 5321's General-address-literals only the IPv6 one is registered; ABNF strings ignore case.
    if text[:5].lower() == "ipv6:":
        return _is_rfc5321_ipv6(text[5:])
    return _is_ipv4_literal(text)


def _is_ipv4_literal(text: str) -> bool:
    # Snum: 1 to 3 digits (leading zeros allowed) for a value of 0 to 255.
    return _IPV4_LITERAL.fullmatch(text) is not None and all(int(part) <= 255 for part in text.split("."))


def _is_rfc5321_ipv6(text: str) -> bool:
    """IPv6-full, IPv6-comp, IPv6v4-full or IPv6v4-comp: 8 groups, an IPv4 address counting as the last two;
    `::` stands for at least two zero groups, so at most 6 groups may be written beside it."""
    head, colon, last = text.rpartition(":")
    if colon and "." in last:
        if not _is_ipv4_literal(last):
            return False
        text = f"{head}:0:0"
    if "::" in text:
        left, _, right = text.partition("::")
        written = [*(left.split(":") if left else ()), *(right.split(":") if right else ())]
        return len(written) <= 6 and all(_IPV6_HEX.fullmatch(group) for group in written)
    written = text.split(":")
    return len(written) == 8 and all(_IPV6_HEX.fullmatch(group) for group in written)


# -- RFC 3986 §3 and appendix A (URI) ---------------------------------------------------------------------------

_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT_ENCODED = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT_ENCODED})"
_H16 = r"[0-9A-Fa-f]{1,4}"
_DEC_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4_ADDRESS = rf"{_DEC_OCTET}(?:\.{_DEC_OCTET}){{3}}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4_ADDRESS})"
_IPV6_ADDRESS = "|".join(
    [
        rf"(?:{_H16}:){{6}}{_LS32}",
        rf"::(?:{_H16}:){{5}}{_LS32}",
        rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
        rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
        rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
        rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
    ]
)
_IP_LITERAL = rf"\[(?:{_IPV6_ADDRESS}|v[0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+)\]"
# An IPv4address is also a reg-name: no alternative of its own needed.
_REG_NAME = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT_ENCODED})*"
_AUTHORITY = rf"(?:(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT_ENCODED})*@)?(?:{_IP_LITERAL}|{_REG_NAME})(?::[0-9]*)?"


@cache
def _uri() -> re.Pattern[str]:
    # Compiled on first use, as `_mailbox()` (a few ms).
    return re.compile(
        rf"[A-Za-z][A-Za-z0-9+\-.]*:"
        rf"(?://{_AUTHORITY}(?:/{_PCHAR}*)*|/(?:{_PCHAR}+(?:/{_PCHAR}*)*)?|{_PCHAR}+(?:/{_PCHAR}*)*|)"
        rf"(?:\?(?:{_PCHAR}|[/?])*)?"
        rf"(?:#(?:{_PCHAR}|[/?])*)?"
    )


def is_uri(value: str) -> bool:
    """Whether `value` is an absolute URI (RFC 3986 `URI`: a scheme, then only what the grammar allows)."""
    return _uri().fullmatch(value) is not None


def parse_timestamp(text: str) -> datetime | str:
    """The moment `text` names (ISO 8601 with a UTC offset: `2024-05-01T12:00:00+02:00`, `...Z`), or what is wrong
    with it (a message that quotes it, shortened)."""
    try:
        # Before Python 3.11, fromisoformat reads only what isoformat writes (no "Z"): the common forms, fast.
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        from dateutil.parser import isoparse  # noqa: PLC0415 - the rarer ISO 8601 forms only

        try:
            moment = isoparse(text)
        except (ValueError, OverflowError):
            return (
                f"must be an ISO 8601 date-time with a UTC offset, like 2024-05-01T12:00:00+02:00, got {quoted(text)}"
            )
    if moment.tzinfo is None:
        written = moment.isoformat()
        return f"has no UTC offset: add one, e.g. {written}Z or {written}+02:00"
    return moment
