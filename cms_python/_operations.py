"""The API's endpoints as the generated client exposes them, and one checked request ready to send."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeAlias, TypeVar

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


@dataclass(frozen=True, slots=True)
class Operation(Generic[Payload]):
    """One endpoint: its path, its body model, and the generated functions that send to it."""

    kind: Literal["lead", "sale"]
    path: str
    payload: type[Payload]
    _sync_detailed: _SyncDetailed[Payload]
    _asyncio_detailed: _AsyncDetailed[Payload]

    def send(self, api: Client, request: TrackRequest[Payload]) -> ApiResponse:
        """One attempt, blocking; httpx exceptions propagate."""
        return self._sync_detailed(client=api, body=request.body, idempotency_key=request.idempotency_key)

    async def send_async(self, api: Client, request: TrackRequest[Payload]) -> ApiResponse:
        """One attempt on the running event loop; httpx exceptions propagate."""
        return await self._asyncio_detailed(client=api, body=request.body, idempotency_key=request.idempotency_key)


LEAD = Operation("lead", "/track/lead", LeadPayload, lead_api.sync_detailed, lead_api.asyncio_detailed)
SALE = Operation("sale", "/track/sale", SalePayload, sale_api.sync_detailed, sale_api.asyncio_detailed)


@dataclass(frozen=True, slots=True)
class TrackRequest(Generic[Payload]):
    """A checked call, ready to send: the same idempotency key goes with every attempt."""

    operation: Operation[Payload]
    body: Payload
    idempotency_key: str
