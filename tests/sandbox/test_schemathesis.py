"""Schemathesis fuzzes the sandbox's HTTP server from the spec: every answer must conform to it.

All of schemathesis's checks run (status codes, content types, response schemas, negative data rejected,
schema-valid data accepted, auth not ignored, 405 with `Allow` for undeclared methods, ...). Two settings
reflect the API's documented rules rather than the schema: a schema-valid body may still be refused with
400 (no clickId and no deferred association) or 409 (duplicate attribution, an invoice or Idempotency-Key
reused), and the sandbox requires one token, so that "invalid credentials" can be told apart.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import settings

from cms_python._spec import load_spec
from cms_python.testing import Sandbox

TOKEN = "schemathesis-token"
CONFIG = schemathesis.Config.from_str(
    """
[checks.positive_data_acceptance]
expected-statuses = ["2XX", "400", "401", "403", "404", "409", "429"]
"""
)
schema = schemathesis.openapi.from_dict(load_spec(), config=CONFIG)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with Sandbox(token=TOKEN).serve() as base:
        yield base


@schema.parametrize()
@settings(max_examples=100, derandomize=True, database=None, deadline=None)  # the same cases at every run
def test_every_answer_conforms_to_the_spec(case: schemathesis.Case, url: str) -> None:
    case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"})
