from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define

from ..types import UNSET, Unset

T = TypeVar("T", bound="SalePayload")


@_attrs_define
class SalePayload:
    """
    Attributes:
        event_name (str): The event's name, e.g. `purchase_completed`.
        customer_external_id (str):
        invoice_id (str): Deduplicates retries and repeated submissions of one sale.
        amount (int): In cents.
        currency (str): 3-letter ISO 4217 code, e.g. `USD`.
        click_id (str | Unset): Required unless a deferred lead associates the customer with a click.
        customer_name (str | Unset): May be empty.
        customer_email (str | Unset):
        customer_avatar (str | Unset):
        timestamp (datetime.datetime | Unset):
    """

    event_name: str
    customer_external_id: str
    invoice_id: str
    amount: int
    currency: str
    click_id: str | Unset = UNSET
    customer_name: str | Unset = UNSET
    customer_email: str | Unset = UNSET
    customer_avatar: str | Unset = UNSET
    timestamp: datetime.datetime | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        event_name = self.event_name

        customer_external_id = self.customer_external_id

        invoice_id = self.invoice_id

        amount = self.amount

        currency = self.currency

        click_id = self.click_id

        customer_name = self.customer_name

        customer_email = self.customer_email

        customer_avatar = self.customer_avatar

        timestamp: str | Unset = UNSET
        if not isinstance(self.timestamp, Unset):
            timestamp = self.timestamp.isoformat()

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "eventName": event_name,
                "customerExternalId": customer_external_id,
                "invoiceId": invoice_id,
                "amount": amount,
                "currency": currency,
            }
        )
        if click_id is not UNSET:
            field_dict["clickId"] = click_id
        if customer_name is not UNSET:
            field_dict["customerName"] = customer_name
        if customer_email is not UNSET:
            field_dict["customerEmail"] = customer_email
        if customer_avatar is not UNSET:
            field_dict["customerAvatar"] = customer_avatar
        if timestamp is not UNSET:
            field_dict["timestamp"] = timestamp

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        event_name = d.pop("eventName")

        customer_external_id = d.pop("customerExternalId")

        invoice_id = d.pop("invoiceId")

        amount = d.pop("amount")

        currency = d.pop("currency")

        click_id = d.pop("clickId", UNSET)

        customer_name = d.pop("customerName", UNSET)

        customer_email = d.pop("customerEmail", UNSET)

        customer_avatar = d.pop("customerAvatar", UNSET)

        _timestamp = d.pop("timestamp", UNSET)
        timestamp: datetime.datetime | Unset
        if isinstance(_timestamp, Unset):
            timestamp = UNSET
        else:
            from dateutil.parser import isoparse

            timestamp = isoparse(_timestamp)

        sale_payload = cls(
            event_name=event_name,
            customer_external_id=customer_external_id,
            invoice_id=invoice_id,
            amount=amount,
            currency=currency,
            click_id=click_id,
            customer_name=customer_name,
            customer_email=customer_email,
            customer_avatar=customer_avatar,
            timestamp=timestamp,
        )

        return sale_payload
