"""Read the rows of an import: CSV or JSON Lines files, or mappings, streamed, with the line each row starts on.

Only the shape is checked here (the header, the columns, the encoding, one object per JSON line): what is wrong
with the file as a whole raises `MalformedInputError`. What is wrong with one row's values is for `_importing`.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal, TypeAlias

from .._printable import quoted
from .._requests import build_lead, build_sale

Kind: TypeAlias = Literal["lead", "sale"]
Format: TypeAlias = Literal["csv", "jsonl"]
#: A row: the line it starts on (for mappings, its position from 1), its values by field name (empty ones left out),
#: and whether the values are text to convert (CSV) or already typed (JSON, Python).
Row: TypeAlias = tuple[int, dict[str, Any], bool]

KINDS: tuple[Kind, ...] = ("lead", "sale")
FORMATS: tuple[Format, ...] = ("csv", "jsonl")
_FORMAT_BY_SUFFIX: dict[str, Format] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
KIND_COLUMN = "kind"
#: Each kind's fields: the keyword arguments of its `track_*` method, and those without a default.
FIELDS: dict[Kind, tuple[str, ...]] = {
    "lead": tuple(inspect.signature(build_lead).parameters),
    "sale": tuple(inspect.signature(build_sale).parameters),
}
REQUIRED: dict[Kind, tuple[str, ...]] = {
    "lead": tuple(name for name, p in inspect.signature(build_lead).parameters.items() if p.default is p.empty),
    "sale": tuple(name for name, p in inspect.signature(build_sale).parameters.items() if p.default is p.empty),
}


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


_ALL_FIELDS = (KIND_COLUMN, *dict.fromkeys(FIELDS["lead"] + FIELDS["sale"]))
#: Column (or key) name -> field name: the keyword arguments' names, and the API's camelCase ones.
NAMES: dict[str, str] = {spelling: name for name in _ALL_FIELDS for spelling in (name, _camel(name))}
_NAMING_HINT = (
    "name columns as track_lead/track_sale's keyword arguments (event_name, customer_external_id, ...) "
    "or as the API's fields (eventName, customerExternalId, ...), plus kind"
)


class MalformedInputError(ValueError):
    """The input as a whole cannot be imported (a bad header, not UTF-8, not JSON Lines, ...); nothing was sent.

    `line` is the line (for mappings, the row) the problem was found on, counting from 1 as an editor does.
    """

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


def format_of(path: str | os.PathLike[str], format: Format | None) -> Format:
    """`format` if given, else what the file name says (`.csv`, `.jsonl`, `.ndjson`); `ValueError` otherwise."""
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"format must be 'csv' or 'jsonl', not {quoted(format)}")
        return format
    found = _FORMAT_BY_SUFFIX.get(Path(path).suffix.lower())
    if found is None:
        raise ValueError(f"cannot tell the format of {os.fspath(path)!r} from its name: say csv or jsonl")
    return found


def read_file(path: str | os.PathLike[str], format: Format, kind: Kind | None) -> Iterator[Row]:
    """The rows of a CSV or JSON Lines file, streamed. `kind`: the kind of rows that have no kind column."""
    with open(path, "rb") as file:
        yield from (_csv_rows if format == "csv" else _jsonl_rows)(file, kind)


def read_mappings(rows: Iterable[Mapping[str, Any]]) -> Iterator[Row]:
    """Rows given as mappings (keys as in a file; values as `track_*` takes them), numbered from 1."""
    for number, row in enumerate(rows, 1):
        if not isinstance(row, Mapping):
            raise MalformedInputError(number, f"is a {type(row).__name__}, not a mapping of field names to values")
        yield number, _fields(number, row), False


def _decoded_lines(file: IO[bytes]) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(file, 1):
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            raise MalformedInputError(
                number, f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}): save it as UTF-8"
            ) from None
        yield number, (text.removeprefix("\ufeff") if number == 1 else text)


def _csv_rows(file: IO[bytes], kind: Kind | None) -> Iterator[Row]:
    counted = _decoded_lines(file)
    reader = csv.reader((text for _, text in counted), strict=True)
    records = _csv_records(reader)
    try:
        header_line, header = next(records)
    except StopIteration:
        raise MalformedInputError(1, "the file is empty: a CSV file starts with a header row") from None
    columns = _columns(header_line, header, kind)
    width = len(columns)
    for line, record in records:
        if len(record) != width:
            raise MalformedInputError(
                line,
                f"has {len(record)} fields, the header has {width} (a value with a comma must be in double quotes)",
            )
        yield line, {name: value for name, value in zip(columns, record, strict=True) if value}, True


def _csv_records(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank record with the line it starts on (a quoted line break makes a record span lines)."""
    start = 1
    try:
        for record in reader:
            if record:
                yield start, record
            start = reader.line_num + 1
    except csv.Error as exc:
        raise MalformedInputError(start, f"is not valid CSV: {exc}") from None


def _columns(line: int, header: list[str], kind: Kind | None) -> list[str]:
    columns: list[str] = []
    for position, spelling in enumerate(header, 1):
        name = NAMES.get(spelling.strip())
        if name is None:
            what = f"unknown column {quoted(spelling)}" if spelling.strip() else f"column {position} has no name"
            raise MalformedInputError(line, f"{what}: {_NAMING_HINT}")
        if name in columns:
            raise MalformedInputError(line, f"two columns are the field {name}")
        columns.append(name)
    if KIND_COLUMN in columns:
        needed = [name for name in REQUIRED["lead"] if name in REQUIRED["sale"]]
        reason = "required for leads and sales"
    elif kind is None:
        raise MalformedInputError(line, "no kind column and no kind given: pass --kind lead|sale or add a kind column")
    else:
        needed, reason = list(REQUIRED[kind]), f"required for a {kind}"
        for name in columns:
            if name not in FIELDS[kind]:
                raise MalformedInputError(line, f"column {name!r} is not a field of a {kind}")
    missing = [name for name in needed if name not in columns]
    if missing:
        raise MalformedInputError(line, f"no {', '.join(missing)} column ({reason})")
    return columns


def _jsonl_rows(file: IO[bytes], kind: Kind | None) -> Iterator[Row]:
    empty = True
    for line, text in _decoded_lines(file):
        if not text.strip():
            continue
        empty = False
        try:
            value = json.loads(text)
        except RecursionError:  # json's parser recurses once per level of nesting
            raise MalformedInputError(line, "is nested too deeply: a row is one JSON object of fields") from None
        except ValueError as exc:
            if line == 1 and text.lstrip().startswith("["):
                value = None  # the start of a JSON array over several lines: said below
            else:
                raise MalformedInputError(line, f"is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            if line == 1 and text.lstrip().startswith("["):
                raise MalformedInputError(
                    line, "the file is a JSON array: JSON Lines has one object per line (jq -c '.[]' converts it)"
                )
            raise MalformedInputError(line, f"is a JSON {_json_type(value)}, not an object")
        yield line, _fields(line, value), False
    if empty:
        raise MalformedInputError(1, "the file is empty: JSON Lines has one object per line")


def _fields(line: int, row: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for spelling, value in row.items():
        name = NAMES.get(spelling) if isinstance(spelling, str) else None
        if name is None:
            raise MalformedInputError(line, f"unknown field {quoted(spelling)}: {_NAMING_HINT}")
        fields[name] = value
    if len(fields) < len(row):
        raise MalformedInputError(line, "two keys name the same field (e.g. event_name and eventName)")
    # null / None is an absent value, as an empty CSV cell is.
    return {name: value for name, value in fields.items() if value is not None}


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"
