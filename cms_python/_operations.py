"""The API's endpoints as the generated client exposes them, and one checked request ready to send."""

from __future__ import annotations

from typing import Final, Generic, Literal, Protocol, TypeAlias, TypeVar

from cms_api_client import Client
from cms_api_client.api.tracking import track_lead as lead_api
from cms_api_client.api.tracking import track_sale as sale_api
from cms_api_client.models import ErrorResponse, LeadPayload, SalePayload, TrackResponse
from cms_api_client.types import UNSET, Response, Unset

ApiResponse: TypeAlias = Response[ErrorResponse | TrackResponse]
Payload = TypeVar("Payload", LeadPayload, SalePayload)
_Body_contra = TypeVar("_Body_contra", LeadPayload, SalePayload, contravariant=True)


class _SyncDetailed(Protocol[_Body_contra]):
    def __call__(self, *, client: Client, body: _Body_contra, idempotency_key: str | Unset = UNSET) -> ApiResponse: ...


class _AsyncDetailed(Protocol[_Body_contra]):
    async def __call__(
        self, *, client: Client, body: _Body_contra, idempotency_key: str | Unset = UNSET
    ) -> ApiResponse: ...


# Operation and TrackRequest are plain classes, read-only to mypy (Final): a dataclass costs ~0.3 ms of `import
# cms_python` apiece, and a frozen one's __init__ is the slower on every call.
class Operation(Generic[Payload]):
    """One endpoint: its path, its body model, and the generated functions that send to it."""

    __slots__ = ("_asyncio_detailed", "_sync_detailed", "kind", "path", "payload")

    def __init__(
        self,
        kind: Literal["lead", "sale"],
        path: str,
        payload: type[Payload],
        sync_detailed: _SyncDetailed[Payload],
        asyncio_detailed: _AsyncDetailed[Payload],
    ) -> None:
        self.kind: Final[Literal["lead", "sale"]] = kind
        self.path: Final[str] = path
        self.payload: Final[type[Payload]] = payload
        self._sync_detailed: Final[_SyncDetailed[Payload]] = sync_detailed
        self._asyncio_detailed: Final[_AsyncDetailed[Payload]] = asyncio_detailed

    def send(self, api: Client, request: TrackRequest[Payload]) -> ApiResponse:
        """One attempt, blocking; httpx exceptions propagate."""
        return self._sync_detailed(client=api, body=request.body, idempotency_key=request.idempotency_key)

    async def send_async(self, api: Client, request: TrackRequest[Payload]) -> ApiResponse:
        """One attempt on the running event loop; httpx exceptions propagate."""
        return await self._asyncio_detailed(client=api, body=request.body, idempotency_key=request.idempotency_key)


LEAD = Operation("lead", "/track/lead", LeadPayload, lead_api.sync_detailed, lead_api.asyncio_detailed)
SALE = Operation("sale", "/track/sale", SalePayload, sale_api.sync_detailed, sale_api.asyncio_detailed)


class TrackRequest(Generic[Payload]):
    """A checked call, ready to send: the same idempotency key goes with every attempt."""

    __slots__ = ("body", "idempotency_key", "operation")

    def __init__(self, operation: Operation[Payload], body: Payload, idempotency_key: str) -> None:
        self.operation: Final[Operation[Payload]] = operation
        self.body: Final[Payload] = body
        self.idempotency_key: Final[str] = idempotency_key
