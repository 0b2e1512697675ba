"""The one canonical JSON encoding, and the one content hash made from it: what makes two events "the same".

The outbox stores each request body in this encoding and its hash beside it (an event queued again with the same
content is recognised by it); `import_events` derives a row's idempotency key from the hash of its arguments.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any


def _default(value: object) -> str:
    # A timestamp as `isoformat()` writes it; any other value not JSON's (only in rows that will prove invalid)
    # as its repr.
    return value.isoformat() if isinstance(value, datetime) else repr(value)


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def canonical_json(value: Any) -> str:
    """`value` as JSON with sorted keys and no spaces: equal values give equal text."""
    return _ENCODER.encode(value)


def content_hash(kind: str, canonical: str) -> str:
    """The SHA-256 (hex) of an event's kind and its canonical JSON; a lone surrogate hashes as it is."""
    return hashlib.sha256(f"{kind}\n{canonical}".encode(errors="surrogatepass")).hexdigest()
