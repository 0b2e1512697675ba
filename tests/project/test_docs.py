"""The README's Python examples stay valid: all of them compile, the testing examples pass as written."""

from __future__ import annotations

import ast
import re
from typing import Any

import pytest

from ..support import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)

pytest_plugins = ["pytester"]


def test_the_readme_has_the_examples_the_tests_below_run() -> None:
    # A parametrization over nothing would skip, not fail: a README whose blocks can no longer be found fails here.
    assert len(BLOCKS) >= 10
    assert any("def test_" in block for block in BLOCKS)
    assert any("app:secret@db/app" in block for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_python_blocks_compile(block: str) -> None:
    # `await` at the top level is allowed: the async examples are written as if inside a coroutine.
    compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("example", [block for block in BLOCKS if "def test_" in block])
def test_the_testing_examples_pass_as_written(pytester: pytest.Pytester, example: str) -> None:
    pytester.makepyfile(test_example=example)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=example.count("def test_"))


DATABASE_EXAMPLE = "postgresql://app:secret@db/app"


@pytest.mark.parametrize(
    "example",
    [block for block in BLOCKS if "app:secret@db/app" in block and "orders" in block and "async" not in block],
)
def test_the_database_examples_run_against_a_real_database(
    example: str, postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg  # noqa: PLC0415 - the dev extra's, for this test only

    from cms_python import Outbox  # noqa: PLC0415
    from cms_python.testing import Sandbox  # noqa: PLC0415

    url = postgres.new_url()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE orders (id text, customer text, cents integer)")
    sandbox = Sandbox()
    with sandbox.serve() as sandbox_url:
        monkeypatch.setenv("CMS_BEARER_TOKEN", "readme-token-123")
        monkeypatch.setenv("CMS_HOST", sandbox_url)
        namespace: dict[str, Any] = {}
        if "Outbox(" not in example:  # a later block, using the `outbox` the first one made
            namespace["outbox"] = Outbox(url, rate_limit=None)
        code = example.replace(DATABASE_EXAMPLE, url).replace(
            DATABASE_EXAMPLE.replace("postgresql://", "postgresql+psycopg://"),
            url.replace("postgresql://", "postgresql+psycopg://"),
        )
        exec(code, namespace)
        outbox = namespace["outbox"]
        assert outbox.flush(timeout=10)
        outbox.close()
        if "engine" in namespace:  # the SQLAlchemy example's pool
            namespace["engine"].dispose()
    assert [(sale.invoice_id, sale.amount) for sale in sandbox.sales] == [("inv_987", 4999)]
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT id FROM orders").fetchall() == [("inv_987",)]
