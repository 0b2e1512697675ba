"""CutMeShort conversion tracking: `CMSClient` (sync) and `AsyncCMSClient` (asyncio).

from cms_python import CMSClient

client = CMSClient()  # token from CMS_BEARER_TOKEN
result = client.track_lead(click_id="id_123", event_name="signup_started", customer_external_id="user_42")
if not result["success"]:
    print(result["error"], result["status_code"])
"""

from typing import TYPE_CHECKING, Any

from ._base import DEFAULT_HOST
from ._client import CMSClient
from ._types import TrackError, TrackQueued, TrackResult, TrackSuccess
from ._version import __version__

if TYPE_CHECKING:
    from ._async_client import AsyncCMSClient
    from ._backfill import ImportSummary, MalformedInputError, RowProblem, import_events
    from ._outbox import FailedEvent, Outbox, StorageError, Within

__all__ = [
    "DEFAULT_HOST",
    "AsyncCMSClient",
    "CMSClient",
    "FailedEvent",
    "ImportSummary",
    "MalformedInputError",
    "Outbox",
    "RowProblem",
    "StorageError",
    "TrackError",
    "TrackQueued",
    "TrackResult",
    "TrackSuccess",
    "Within",
    "__version__",
    "import_events",
]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `import cms_python` (and `from cms_python import CMSClient`) pays for the
    # sync path only: the async face brings asyncio, the outbox sqlite3 and a thread. Later lookups of a name
    # find it in globals() without coming here.
    if name == "AsyncCMSClient":
        from ._async_client import AsyncCMSClient  # noqa: PLC0415

        value: Any = AsyncCMSClient
    elif name in ("Outbox", "FailedEvent", "StorageError", "Within"):
        from . import _outbox  # noqa: PLC0415

        value = getattr(_outbox, name)
    elif name in ("ImportSummary", "MalformedInputError", "RowProblem", "import_events"):
        from . import _backfill  # noqa: PLC0415

        value = getattr(_backfill, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
