"""One email rule and one URI rule (cms_python/_formats.py) for the SDK's argument checks and the sandbox's request
checks: both give the same verdict on every edge below.

An email address is an RFC 5321 Mailbox, UTF-8 allowed (RFC 6531). `customer_avatar` must be an RFC 3986
absolute URI for both; the SDK also wants an http(s) URL with a host, the spec any URI (`mailto:` too).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from cms_python._formats import is_email, is_uri
from cms_python.testing import SANDBOX_HOST, Sandbox

LEAD_KWARGS = {"click_id": "c", "event_name": "e", "customer_external_id": "u"}
LEAD_BODY = {"clickId": "c", "eventName": "e", "customerExternalId": "u"}

EMAILS = [
    ("jane@example.com", True),
    ("jane.doe+tag@mail.example.co.uk", True),
    ("jane@localhost", True),
    ('"j d"@example.com', True),
    ('"j\\"d@x"@example.com', True),
    ('""@example.com', True),
    ("jane@[192.0.2.1]", True),
    ("jane@[001.2.3.4]", True),  # RFC 5321's Snum: up to 3 digits
    ("jane@[IPv6:2001:db8::1]", True),
    ("jane@[IPv6:::ffff:192.0.2.1]", True),
    ("jane@[IPv6:1:2:3:4:5:6:7:8]", True),
    ("jösé@bücher.de", True),
    ("a@b", True),
    ("jane", False),
    ("jane@", False),
    ("@example.com", False),
    ("jane doe@example.com", False),
    ("jane..doe@example.com", False),
    (".jane@example.com", False),
    ("jane.@example.com", False),
    ("jane@@example.com", False),
    ('j"d@example.com', False),
    ('"j"d"@example.com', False),
    ('"j\\"@example.com', False),
    ("jane@example..com", False),
    ("jane@example.com.", False),
    ("jane@-example.com", False),
    ("jane@example-.com", False),
    ("jane@exa_mple.com", False),
    ("jane@exam ple.com", False),
    ("jane@[192.0.2.256]", False),
    ("jane@[IPv6:1::2::3]", False),
    ("jane@[IPv6:1:2:3:4:5:6:7::]", False),  # "::" stands for at least two groups
    ("jane@[IPv6:1:2:3:4:5::192.0.2.1]", False),
    ("jane@[example.com]", False),
    ("jane@[X-tag:anything]", False),  # no other address-literal tag is registered
    ("jane@example.com\n", False),
    ("jane\ud800@example.com", False),
]
# (value, an RFC 3986 URI, an http(s) URL the SDK sends as customer_avatar)
URIS = [
    ("https://example.com/a.png", True, True),
    ("https://cdn.example.com/a%20b.png?size=64#top", True, True),
    ("HTTPS://EXAMPLE.COM/A.PNG", True, True),
    ("http://127.0.0.1:8080/a", True, True),
    ("http://[::1]/a.png", True, True),
    ("http://[::ffff:192.0.2.1]:8/", True, True),
    ("https://u:p@example.com/a.png", True, True),
    ("http://x:/", True, True),  # an empty port is allowed
    ("mailto:jane@example.com", True, False),
    ("urn:isbn:0451450523", True, False),
    ("https://", True, False),
    ("http://x:notaport/", False, False),
    ("http://x:port/", False, False),
    ("http://[::1", False, False),
    ("http://[::1]x/", False, False),
    ("http://[::1.2.3.04]/", False, False),
    ("https://u:p@h/#a#b", False, False),
    ("https://example.com/#a#b", False, False),
    ("https://example.com/?q=[x]", False, False),  # brackets only around an IPv6 host
    ("http://exämple.com/", False, False),
    ("http://example.com/a b", False, False),
    ("http://example.com/%zz", False, False),
    ("http://example.com/<x>", False, False),
    ("http://example.com/\n", False, False),
    ("//example.com/a.png", False, False),
    ("example.com/a.png", False, False),
    ("1http://example.com/", False, False),
]


@pytest.mark.parametrize(("value", "valid"), EMAILS)
def test_the_sdk_and_the_sandbox_agree_on_emails(cms_sandbox, cms_client, value, valid):
    assert is_email(value) is valid
    result = cms_client.track_lead(**LEAD_KWARGS, customer_email=value)
    # Accepted by the SDK means sent and accepted by the sandbox; refused means nothing sent.
    assert result["success"] is valid, result
    if not valid:
        assert (result["status_code"], result["type"], list(result["details"])) == (
            None,
            "validation_error",
            ["customer_email"],
        )
        assert cms_sandbox.requests == []
        assert sandbox_refuses(cms_sandbox, {**LEAD_BODY, "customerEmail": value}) == {"customerEmail"}


@pytest.mark.parametrize(("value", "uri", "http_url"), URIS)
def test_the_sdk_and_the_sandbox_agree_on_uris(cms_sandbox, cms_client, value, uri, http_url):
    assert is_uri(value) is uri
    assert sandbox_refuses(cms_sandbox, {**LEAD_BODY, "customerAvatar": value}) == (
        set() if uri else {"customerAvatar"}
    )
    result = cms_client.track_lead(**LEAD_KWARGS, customer_avatar=value)
    assert result["success"] is http_url, result
    if not http_url:
        assert (result["type"], list(result["details"])) == ("validation_error", ["customer_avatar"])


def sandbox_refuses(sandbox: Sandbox, body: dict[str, Any]) -> set[str]:
    """The fields the sandbox refuses in a lead body sent as it is (the SDK would not send some of them)."""
    headers = {"Authorization": "Bearer raw", "Content-Type": "application/json"}
    with httpx.Client(transport=sandbox.transport(), headers=headers) as http:
        response = http.post(f"{SANDBOX_HOST}/track/lead", content=json.dumps(body).encode())
    return set() if response.status_code == 200 else set(response.json()["details"])
