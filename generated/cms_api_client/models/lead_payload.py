from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define

from ..models.lead_mode import LeadMode, check_lead_mode
from ..types import UNSET, Unset

T = TypeVar("T", bound="LeadPayload")


@_attrs_define
class LeadPayload:
    """
    Attributes:
        event_name (str): The event's name, e.g. `signup_started`.
        customer_external_id (str): Your stable id for the customer.
        click_id (str | Unset): Required for a standard lead and for the first deferred call; omitted on later calls.
        mode (LeadMode | Unset): `deferred` stores the click-to-customer association for later events.
        customer_name (str | Unset): May be empty.
        customer_email (str | Unset):
        customer_avatar (str | Unset):
        timestamp (datetime.datetime | Unset): When the event happened (ISO 8601 with offset); the server sets it when
            absent.
    """

    event_name: str
    customer_external_id: str
    click_id: str | Unset = UNSET
    mode: LeadMode | Unset = UNSET
    customer_name: str | Unset = UNSET
    customer_email: str | Unset = UNSET
    customer_avatar: str | Unset = UNSET
    timestamp: datetime.datetime | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        event_name = self.event_name

        customer_external_id = self.customer_external_id

        click_id = self.click_id

        mode: str | Unset = UNSET
        if not isinstance(self.mode, Unset):
            mode = self.mode

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
            }
        )
        if click_id is not UNSET:
            field_dict["clickId"] = click_id
        if mode is not UNSET:
            field_dict["mode"] = mode
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

        click_id = d.pop("clickId", UNSET)

        _mode = d.pop("mode", UNSET)
        mode: LeadMode | Unset
        if isinstance(_mode, Unset):
            mode = UNSET
        else:
            mode = check_lead_mode(_mode)

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

        lead_payload = cls(
            event_name=event_name,
            customer_external_id=customer_external_id,
            click_id=click_id,
            mode=mode,
            customer_name=customer_name,
            customer_email=customer_email,
            customer_avatar=customer_avatar,
            timestamp=timestamp,
        )

        return lead_payload
