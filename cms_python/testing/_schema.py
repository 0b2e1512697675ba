"""The OpenAPI spec shipped with the package, and a small JSON Schema validator for the sandbox's request checks.

The validator knows exactly the keywords the spec's request schemas use (`$ref`, `type`, `required`,
`properties`, `additionalProperties`, `enum`, `minLength`, `maxLength`, `pattern`, `minimum`, `maximum`,
`format` email / date-time / uri) and refuses any other validation keyword with `ValueError`, so a change to
the spec can never make the sandbox silently accept what it no longer checks. A full JSON Schema library
would be a runtime dependency, which the SDK does not take on; tests/sandbox/test_schema.py proves this one gives
`jsonschema`'s verdicts on the spec's schemas.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any

from .._formats import is_email, is_uri

#: Keywords that describe rather than constrain: ignored.
_ANNOTATIONS = frozenset({"description", "title", "example", "examples", "default", "deprecated"})
_TYPES: dict[str, str] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "object": "an object",
    "array": "an array",
    "null": "null",
}
_PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
    "null": type(None),
}
# RFC 3339 `date-time`: the offset is required (a time without one is ambiguous).
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))", re.ASCII
)


class Validator:
    """Checks JSON values against schemas of one OpenAPI document, whose local `$ref`s it resolves."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document

    def resolve(self, reference: str) -> Mapping[str, Any]:
        """The schema a local reference such as `#/components/schemas/LeadPayload` points to."""
        if not reference.startswith("#/"):
            raise ValueError(f"only local $refs are supported, got {reference!r}")
        node: Any = self._document
        for part in reference[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        if not isinstance(node, Mapping):
            raise ValueError(f"$ref {reference!r} does not point to a schema")
        return node

    def problems(self, schema: Mapping[str, Any], value: Any, where: str = "") -> dict[str, str]:
        """Every problem found, keyed by the field's path (`amount`, `a.b`; `body` for the value itself).

        Each field gets its first problem only; an empty dict means the value is valid.
        """
        found: dict[str, str] = {}
        self._check(schema, value, where, found)
        return found

    def _check(self, schema: Mapping[str, Any], value: Any, where: str, found: dict[str, str]) -> None:
        unknown = set(schema) - _ANNOTATIONS - _KEYWORDS
        if unknown:
            raise ValueError(f"unsupported JSON Schema keyword(s) {sorted(unknown)} at {where or 'the root'}")
        key = where or "body"
        if "$ref" in schema:
            self._check(self.resolve(schema["$ref"]), value, where, found)
        if "type" in schema and not _has_type(value, schema["type"]):
            found.setdefault(key, f"must be {_type_names(schema['type'])}")
            return  # the other keywords' messages would only repeat this one
        if "enum" in schema and not any(_json_equal(value, option) for option in schema["enum"]):
            found.setdefault(key, "must be one of " + ", ".join(json.dumps(option) for option in schema["enum"]))
        # The other keywords apply to one JSON type each and ignore values of other types.
        if isinstance(value, dict):
            self._object(schema, value, where, found)
        elif isinstance(value, str):
            problem = _string_problem(schema, value)
            if problem:
                found.setdefault(key, problem)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            problem = _number_problem(schema, value)
            if problem:
                found.setdefault(key, problem)

    def _object(self, schema: Mapping[str, Any], value: dict[str, Any], where: str, found: dict[str, str]) -> None:
        properties: Mapping[str, Any] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                found.setdefault(_join(where, name), "is required")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                self._check(properties[name], item, _join(where, name), found)
            elif extra is False:
                found.setdefault(_join(where, name), "is not allowed")
            elif isinstance(extra, Mapping):
                self._check(extra, item, _join(where, name), found)


_KEYWORDS = frozenset(
    {"$ref", "type", "required", "properties", "additionalProperties", "enum", "minLength", "maxLength"}
    | {"pattern", "minimum", "maximum", "format"}
)


def _string_problem(schema: Mapping[str, Any], value: str) -> str | None:
    # Lengths count code points, as JSON Schema does.
    minimum, maximum = schema.get("minLength"), schema.get("maxLength")
    if minimum is not None and len(value) < minimum:
        return "must not be empty" if minimum == 1 else f"must be at least {minimum} characters"
    if maximum is not None and len(value) > maximum:
        return f"must be at most {maximum} characters"
    if "pattern" in schema and not _ecma_pattern(schema["pattern"]).search(value):
        return f"must match the pattern {schema['pattern']}"
    return _format_problem(schema["format"], value) if "format" in schema else None


def _number_problem(schema: Mapping[str, Any], value: float) -> str | None:
    if "minimum" in schema and value < schema["minimum"]:
        return f"must be at least {schema['minimum']}"
    if "maximum" in schema and value > schema["maximum"]:
        return f"must be at most {schema['maximum']}"
    return None


def _json_equal(value: Any, option: Any) -> bool:
    # JSON equality: true is not 1 (Python says it is), 1.0 is 1.
    return isinstance(value, bool) == isinstance(option, bool) and bool(value == option)


def _has_type(value: Any, expected: str | list[str]) -> bool:
    if isinstance(expected, list):
        return any(_has_type(value, name) for name in expected)
    if expected not in _TYPES:
        raise ValueError(f"unsupported JSON Schema type {expected!r}")
    if isinstance(value, bool):
        return expected == "boolean"
    if expected == "integer":
        # JSON has one number type: 4999.0 is the integer 4999, as JSON Schema says.
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, _PYTHON_TYPES[expected])


def _type_names(expected: str | list[str]) -> str:
    names = expected if isinstance(expected, list) else [expected]
    return " or ".join(_TYPES[name] for name in names)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


@cache
def _ecma_pattern(pattern: str) -> re.Pattern[str]:
    # ECMA-262's `$` (without the m flag) matches only at the very end; Python's also before a final newline.
    translated, escaped, in_class = [], False, False
    for character in pattern:
        end_anchor = character == "$" and not escaped and not in_class
        if escaped:
            escaped = False
        elif character == "\\":
            escaped = True
        elif character in "[]":
            in_class = character == "["
        translated.append(r"\Z" if end_anchor else character)
    return re.compile("".join(translated))


def _format_problem(name: str, value: str) -> str | None:
    if name == "email":
        return None if is_email(value) else "must be an email address like jane@example.com"
    if name == "uri":
        return None if is_uri(value) else "must be an absolute URI like https://example.com/avatar.png"
    if name == "date-time":
        return None if _is_date_time(value) else "must be an RFC 3339 date-time with an offset: 2024-05-01T12:00:00Z"
    raise ValueError(f"unsupported JSON Schema format {name!r}")


def _is_date_time(value: str) -> bool:
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    sign, offset_hours, offset_minutes = match.group(8, 9, 10)
    offset = 0 if sign is None else (int(offset_hours) * 60 + int(offset_minutes)) * (-1 if sign == "-" else 1)
    if sign is not None and (int(offset_hours) > 23 or int(offset_minutes) > 59):
        return False
    try:
        datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return False
    # A leap second (:60) is inserted at the end of a UTC day, 23:59:60Z, whatever the offset says it is locally.
    return second < 60 or (second == 60 and (hour * 60 + minute - offset) % (24 * 60) == 23 * 60 + 59)
