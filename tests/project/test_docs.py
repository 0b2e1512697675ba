"""The Python examples of the README and of the documentation's pages stay valid: all of them compile, the testing
examples pass as written, and the database examples run against a real database."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any

import pytest

from ..support import ROOT

#: How many ```python blocks each page holds. A parametrization over nothing would skip, not fail: a page whose
#: blocks can no longer be found (a fence spelt otherwise, a block or a page gone, a new page) fails here instead.
PYTHON_BLOCKS = {
    "README.md": 1,
    "docs/api.md": 0,
    "docs/async.md": 2,
    "docs/backfilling.md": 1,
    "docs/background-delivery.md": 3,
    "docs/cli.md": 0,
    "docs/decisions.md": 0,
    "docs/development.md": 0,
    "docs/fleets.md": 4,
    "docs/generated-client.md": 1,
    "docs/getting-started.md": 1,
    "docs/index.md": 0,
    "docs/leads.md": 2,
    "docs/performance.md": 0,
    "docs/regenerating.md": 0,
    "docs/reliability.md": 0,
    "docs/results.md": 3,
    "docs/sales.md": 1,
    "docs/testing.md": 1,
    "docs/upgrading.md": 0,
    "docs/web-frameworks.md": 3,
}
PAGES = ["README.md", *(path.relative_to(ROOT).as_posix() for path in sorted((ROOT / "docs").glob("*.md")))]


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(encoding="utf-8"), flags=re.DOTALL)


#: Every example of every page: (page, its index on the page, the block).
EXAMPLES = [(page, index, block) for page in PAGES for index, block in enumerate(python_blocks(page))]
DATABASE_EXAMPLE = "postgresql://app:secret@db/app"


def is_testing_example(block: str) -> bool:
    return "def test_" in block


def is_database_example(block: str) -> bool:
    # psycopg's URL or SQLAlchemy's (postgresql+psycopg://); not the async one, which needs an app around it.
    return "app:secret@db/app" in block and "orders" in block and "async" not in block


def examples(which: Callable[[str], bool]) -> list[Any]:
    return [pytest.param(block, id=f"{page}:{index}") for page, index, block in EXAMPLES if which(block)]


pytest_plugins = ["pytester"]


def test_every_page_has_the_examples_the_tests_below_run() -> None:
    assert {page: len(python_blocks(page)) for page in PAGES} == PYTHON_BLOCKS
    assert [page for page, _, block in EXAMPLES if is_testing_example(block)] == [
        "docs/background-delivery.md",
        "docs/testing.md",
    ]
    assert [page for page, _, block in EXAMPLES if is_database_example(block)] == ["docs/fleets.md"] * 2


def test_the_readme_links_to_every_page_and_to_nothing_missing() -> None:
    # Sphinx checks the links between the pages; the README is read on GitHub, where relative links work.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((?!https?:|#)([^)#]+)", readme))
    assert sorted(path for path in linked if not (ROOT / path).is_file()) == []
    assert {page for page in PAGES if page.startswith("docs/")} <= linked


@pytest.mark.parametrize(
    ("page", "block"), [pytest.param(page, block, id=f"{page}:{index}") for page, index, block in EXAMPLES]
)
def test_python_blocks_compile(page: str, block: str) -> None:
    # `await` at the top level is allowed: the async examples are written as if inside a coroutine.
    compile(block, page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("example", examples(is_testing_example))
def test_the_testing_examples_pass_as_written(pytester: pytest.Pytester, example: str) -> None:
    pytester.makepyfile(test_example=example)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=example.count("def test_"))


@pytest.mark.parametrize("example", examples(is_database_example))
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
