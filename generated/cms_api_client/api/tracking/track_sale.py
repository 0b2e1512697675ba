from typing import Any

import httpx

from ...client import AuthenticatedClient, Client
from ...models.error_response import ErrorResponse
from ...models.sale_payload import SalePayload
from ...models.track_response import TrackResponse
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    body: SalePayload,
    idempotency_key: str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(idempotency_key, Unset):
        headers["Idempotency-Key"] = idempotency_key

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/track/sale",
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorResponse | TrackResponse:
    if response.status_code == 200:
        response_200 = TrackResponse.from_dict(response.json())

        return response_200

    if response.status_code == 400:
        response_400 = ErrorResponse.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = ErrorResponse.from_dict(response.json())

        return response_401

    if response.status_code == 403:
        response_403 = ErrorResponse.from_dict(response.json())

        return response_403

    if response.status_code == 404:
        response_404 = ErrorResponse.from_dict(response.json())

        return response_404

    if response.status_code == 409:
        response_409 = ErrorResponse.from_dict(response.json())

        return response_409

    if response.status_code == 422:
        response_422 = ErrorResponse.from_dict(response.json())

        return response_422

    if response.status_code == 429:
        response_429 = ErrorResponse.from_dict(response.json())

        return response_429

    if response.status_code == 500:
        response_500 = ErrorResponse.from_dict(response.json())

        return response_500

    if response.status_code == 502:
        response_502 = ErrorResponse.from_dict(response.json())

        return response_502

    if response.status_code == 503:
        response_503 = ErrorResponse.from_dict(response.json())

        return response_503

    if response.status_code == 504:
        response_504 = ErrorResponse.from_dict(response.json())

        return response_504

    if 200 <= response.status_code <= 299:
        response_2xx = TrackResponse.from_dict(response.json())

        return response_2xx

    response_default = ErrorResponse.from_dict(response.json())

    return response_default


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[ErrorResponse | TrackResponse]:
    try:
        parsed = _parse_response(client=client, response=response)
    except Exception:  # noqa: BLE001 - the body is untrusted: HTML from a proxy, an empty body, garbage
        parsed = None
    return Response(
        status_code=response.status_code,
        content=response.content,
        headers=response.headers,
        parsed=parsed,
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: SalePayload,
    idempotency_key: str | Unset = UNSET,
) -> Response[ErrorResponse | TrackResponse]:
    """Track a sale event

     `amount` is in cents. `invoiceId` deduplicates retries and repeated submissions.
    `clickId` is required unless a deferred lead already associates the customer with a click.

    Args:
        idempotency_key (str | Unset):
        body (SalePayload):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorResponse | TrackResponse]
    """

    kwargs = _get_kwargs(
        body=body,
        idempotency_key=idempotency_key,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    body: SalePayload,
    idempotency_key: str | Unset = UNSET,
) -> ErrorResponse | TrackResponse | None:
    """Track a sale event

     `amount` is in cents. `invoiceId` deduplicates retries and repeated submissions.
    `clickId` is required unless a deferred lead already associates the customer with a click.

    Args:
        idempotency_key (str | Unset):
        body (SalePayload):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorResponse | TrackResponse
    """

    return sync_detailed(
        client=client,
        body=body,
        idempotency_key=idempotency_key,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: SalePayload,
    idempotency_key: str | Unset = UNSET,
) -> Response[ErrorResponse | TrackResponse]:
    """Track a sale event

     `amount` is in cents. `invoiceId` deduplicates retries and repeated submissions.
    `clickId` is required unless a deferred lead already associates the customer with a click.

    Args:
        idempotency_key (str | Unset):
        body (SalePayload):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorResponse | TrackResponse]
    """

    kwargs = _get_kwargs(
        body=body,
        idempotency_key=idempotency_key,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    body: SalePayload,
    idempotency_key: str | Unset = UNSET,
) -> ErrorResponse | TrackResponse | None:
    """Track a sale event

     `amount` is in cents. `invoiceId` deduplicates retries and repeated submissions.
    `clickId` is required unless a deferred lead already associates the customer with a click.

    Args:
        idempotency_key (str | Unset):
        body (SalePayload):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorResponse | TrackResponse
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
            idempotency_key=idempotency_key,
        )
    ).parsed
