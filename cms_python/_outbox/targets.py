"""What an outbox target names: a file (or ":memory:") for the SQLite store, a `postgresql://` URL for the
PostgreSQL store; and how it is shown without a password. Anything else that looks like a URL is refused: taken
for a path, it would become folders named after it, password included."""

from __future__ import annotations

import re
from urllib.parse import unquote

#: The URL schemes the PostgreSQL store serves (libpq's own).
POSTGRES_SCHEMES = ("postgresql", "postgres")
_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
# user:password@ in a URL's authority: the password is what goes (up to the last @: one may be left unescaped).
_PASSWORD = re.compile(r"(?P<start>[A-Za-z][A-Za-z0-9+.\-]*://[^/?#@:]*):(?P<password>[^/?#]*)@")
# password=... in a query string or a keyword/value connection string.
_PASSWORD_PARAMETER = re.compile(r"(?P<name>\bpassword\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|[^&\s]*)", re.IGNORECASE)
# libpq's other spelling of a connection string, keyword/value pairs ("host=db dbname=app password=...").
_KEYWORD_VALUE = re.compile(
    r"\s*(?:host|hostaddr|port|dbname|user|password|passfile|service|sslmode|options|connect_timeout)\s*=",
    re.IGNORECASE,
)


def is_database_url(target: str) -> bool:
    """Whether `target` is a PostgreSQL URL (else a path); `ValueError` for any other `scheme://`, and for a
    keyword/value connection string (taken for a path, it would name a file, password included)."""
    match = _SCHEME.match(target)
    if match is None:
        if _KEYWORD_VALUE.match(target):
            raise ValueError(
                "An outbox target is a file path (or ':memory:') or a PostgreSQL URL (postgresql://...), not a "
                "keyword/value connection string: write it as a URL, "
                "e.g. postgresql://user:password@host:5432/dbname?sslmode=require"
            )
        return False
    if match["scheme"].lower() in POSTGRES_SCHEMES:
        return True
    raise ValueError(
        f"An outbox target is a file path (or ':memory:') or a PostgreSQL URL "
        f"({' or '.join(f'{scheme}://' for scheme in POSTGRES_SCHEMES)}...), not a {match['scheme']}:// URL"
    )


def label(target: str) -> str:
    """`target` as it may be shown (messages, logs, reprs, thread names): a URL's password replaced by `***`; a
    path as it is."""
    if _SCHEME.match(target) is None:
        return target
    return mask(target)


def mask(text: str) -> str:
    """`text` with the password of every URL in it, and every `password=` value, replaced by `***`."""
    shown = _PASSWORD.sub(r"\g<start>:***@", text)
    return _PASSWORD_PARAMETER.sub(r"\g<name>***", shown)


def passwords(url: str) -> set[str]:
    """The passwords written in `url`, as written and percent-decoded: what to take out of a message that quotes
    either (libpq quotes what it cannot read)."""
    found = set()
    for pattern in (_PASSWORD, _PASSWORD_PARAMETER):
        for match in pattern.finditer(url):
            written = match["password"].strip("'")
            found |= {written, unquote(written)}
    return found - {""}
