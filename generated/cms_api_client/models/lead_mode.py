from typing import Literal, cast

LeadMode = Literal["deferred"]

LEAD_MODE_VALUES: set[LeadMode] = {
    "deferred",
}


def check_lead_mode(value: str) -> LeadMode:
    if value in LEAD_MODE_VALUES:
        return cast(LeadMode, value)
    raise TypeError(f"Unexpected value {value!r}. Expected one of {LEAD_MODE_VALUES!r}")
