from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="TrackResponse")


@_attrs_define
class TrackResponse:
    """Three success shapes are in use: `{"success": true, "timestamp": ...}`,
    `{"status": true, "data": "..."}` and `{"success": true, "message": ..., "data": {...}}`.

        Attributes:
            success (bool | Unset):
            status (bool | Unset):
            message (str | Unset):
            data (Any | Unset):
            timestamp (str | Unset):
    """

    success: bool | Unset = UNSET
    status: bool | Unset = UNSET
    message: str | Unset = UNSET
    data: Any | Unset = UNSET
    timestamp: str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        success = self.success

        status = self.status

        message = self.message

        data = self.data

        timestamp = self.timestamp

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({})
        if success is not UNSET:
            field_dict["success"] = success
        if status is not UNSET:
            field_dict["status"] = status
        if message is not UNSET:
            field_dict["message"] = message
        if data is not UNSET:
            field_dict["data"] = data
        if timestamp is not UNSET:
            field_dict["timestamp"] = timestamp

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        success = d.pop("success", UNSET)

        status = d.pop("status", UNSET)

        message = d.pop("message", UNSET)

        data = d.pop("data", UNSET)

        timestamp = d.pop("timestamp", UNSET)

        track_response = cls(
            success=success,
            status=status,
            message=message,
            data=data,
            timestamp=timestamp,
        )

        track_response.additional_properties = d
        return track_response

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
