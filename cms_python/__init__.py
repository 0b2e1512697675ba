"""CutMeShort conversion tracking: `CMSClient` (sync) and `AsyncCMSClient` (asyncio).

from cms_python import CMSClient

client = CMSClient()  # token from CMS_BEARER_TOKEN
result = client.track_lead(click_id="id_123", event_name="signup_started", customer_external_id="user_42")
if not result["success"]:
    print(result["error"], result["status_code"])
"""

from ._async_client import AsyncCMSClient
from ._base import DEFAULT_HOST
from ._client import CMSClient
from ._types import TrackError, TrackResult, TrackSuccess
from ._version import __version__

__all__ = ["DEFAULT_HOST", "AsyncCMSClient", "CMSClient", "TrackError", "TrackResult", "TrackSuccess", "__version__"]
