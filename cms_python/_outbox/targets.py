"""What an outbox target names: a file (or ":memory:") for the SQLite store, a `postgresql://` URL for the
PostgreSQL store; and how it is shown without a password. Anything else that looks like a URL is refused: taken
for a path, it would become folders named after it, password included."""

from __future__ import annotations

import re

#: The URL schemes the PostgreSQL store serves (libpq's own).
POSTGRES_SCHEMES = ("postgresql", "postgres")
_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
# user:password@ in a URL's authority: the password is what goes.
_PASSWORD = re.compile(r"(?P<start>[A-Za-z][A-Za-z0-9+.\-]*://[^/?#@:]*):[^/?#@]*@")
# password=... in a query string or a keyword/value connection string.
_PASSWORD_PARAMETER = re.compile(r"(?P<name>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^&\s]*)", re.IGNORECASE)


def is_database_url(target: str) -> bool:
    """Whether `target` is a PostgreSQL URL (else a path); `ValueError` for any other `scheme://`."""
    match = _SCHEME.match(target)
    if match is None:
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
    shown = _PASSWORD.sub(r"\g<start>:***@", target)
    return _PASSWORD_PARAMETER.sub(r"\g<name>***", shown)
