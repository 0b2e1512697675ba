"""The README's Python examples stay valid: all of them compile, the testing examples pass as written."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)

pytest_plugins = ["pytester"]


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_python_blocks_compile(block: str) -> None:
    # `await` at the top level is allowed: the async examples are written as if inside a coroutine.
    compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("example", [block for block in BLOCKS if "def test_" in block])
def test_the_testing_examples_pass_as_written(pytester: pytest.Pytester, example: str) -> None:
    pytester.makepyfile(test_example=example)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=example.count("def test_"))
