"""Sphinx configuration: Markdown pages (MyST), the furo theme, and an API reference from the docstrings.

Build: `python -m sphinx -W --keep-going -n -E -b html docs docs/_build/html` (the `docs` extra).
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from typing import Any

from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext.napoleon import Config as NapoleonConfig
from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.util import logging
from sphinx.util.typing import stringify_annotation

import cms_python

project = "cms-python-client"
author = "CutMeShort"
copyright = "CutMeShort"
release = cms_python.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"cms-python-client {release}"

# The pages link to each other's sections as GitHub does (`reliability.md#security-rules`).
myst_heading_anchors = 3
autodoc_member_order = "bysource"
# Each documented name must say something of its own (see `_check_descriptions`), not repeat a base class's.
autodoc_inherit_docstrings = False
# The build is offline (no intersphinx), so names from the standard library and the frameworks have no target;
# nor have the type aliases that the signatures name and the docstrings explain. Every name of cms_python must.
nitpick_ignore_regex = [
    ("py:.*", r"(builtins|datetime|collections\.abc|os|threading|http|contextlib|typing)\..*|datetime"),
    ("py:.*", r"(httpx|flask|django|starlette)\..*|Request"),
    ("py:.*", r"Kind|Format"),
]

#: The modules whose public names (`__all__`) the API reference must document.
PUBLIC_MODULES = [
    "cms_python",
    "cms_python.testing",
    "cms_python.integrations",
    "cms_python.integrations.django",
    "cms_python.integrations.flask",
    "cms_python.integrations.starlette",
]

logger = logging.getLogger(__name__)

# Google-style sections (Args:, Returns:, ...), read by napoleon's parser. Not for attributes, properties and
# constants: it would read "Text: more" in their first line as "type: description".
_NAPOLEON = NapoleonConfig(napoleon_numpy_docstring=False)
_SECTION = re.compile(r"(Args|Arguments|Parameters|Returns?|Yields?|Raises|Attributes|Examples?|Notes?):")
_CODE = re.compile(r"(\w?)(?<!`)`([^`\n]+)`(?!`)(\w?)")


def _inline_code(match: re.Match[str]) -> str:
    before, code, after = match.groups()
    # reStructuredText's inline markup must stand apart from a word: `ValueError`s is ``ValueError``\ s.
    return "\\ ".join(part for part in (before, f"``{code}``", after) if part)


def _docstring_to_rest(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """The docstrings are written to read as plain text, Markdown-like: `name` is code, an indented block after a
    paragraph is a code example, and Google-style sections. Turn them into reStructuredText."""
    if what in ("data", "attribute") and lines and inspect.cleandoc("\n".join(lines)) == inspect.getdoc(type(obj)):
        lines.clear()  # a constant's type's docstring (str's, a union's) says nothing of the constant
    in_section = False
    paragraph = None  # the index of the last line of the paragraph just ended, if the last text was one
    for index, line in enumerate(lines):
        lines[index] = _CODE.sub(_inline_code, line)
        if line and not line[0].isspace():
            in_section = bool(_SECTION.fullmatch(line.strip()))
            paragraph = index
        elif line:
            if paragraph is not None and paragraph < index - 1 and not in_section:
                lines[paragraph] += " ::"  # the indented block is shown as code; a " ::" at the end vanishes
            paragraph = None
    if what not in ("data", "attribute", "property"):
        lines[:] = GoogleDocstring(lines, _NAPOLEON, app, what, name, obj, options).lines()  # type: ignore[arg-type]


def _signature(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, signature: str | None, return_annotation: str | None
) -> tuple[str | None, str | None]:
    if signature and inspect.isclass(obj):
        # A generic base's type parameters as the class binds them: CMSClient's http_client is an httpx.Client.
        for base in getattr(obj, "__orig_bases__", ()):
            parameters = getattr(typing.get_origin(base), "__parameters__", ())  # none for Generic[T] itself
            for parameter, argument in zip(parameters, typing.get_args(base), strict=False):
                signature = signature.replace(
                    stringify_annotation(parameter, "smart"), stringify_annotation(argument, "smart")
                )
        # A dataclass field's default_factory shows as `<factory>`, which the signature's parser cannot read.
        signature = signature.replace("<factory>", "...")
    return signature, return_annotation


def _check_descriptions(app: Sphinx, domain: str, objtype: str, content: addnodes.desc_content) -> None:
    """Every object the API reference shows says something: its docstring, its `#:` comment, or the page's text.
    Not required of a field (a dataclass's, a TypedDict's): its class says what it holds."""
    signature = content.parent[0]
    if domain == "py" and objtype != "attribute" and not content.astext().strip():
        name = f"{signature.get('module', '')}.{signature.get('fullname', '')}".lstrip(".")
        logger.warning("%s %s has no docstring", objtype, name, type="cms", subtype="docstring", location=signature)


def _check_every_public_name_is_documented(app: Sphinx, env: BuildEnvironment) -> None:
    documented = {name for name, *_ in env.get_domain("py").get_objects()}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if not name.startswith("__") and f"{module_name}.{name}" not in documented:
                logger.warning("%s.%s is not in the API reference", module_name, name, type="cms", subtype="api")


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-docstring", _docstring_to_rest)
    app.connect("autodoc-process-signature", _signature)
    app.connect("object-description-transform", _check_descriptions)
    app.connect("env-check-consistency", _check_every_public_name_is_documented)
