"""Contains all the data models used in inputs/outputs"""

from .error_response import ErrorResponse
from .error_response_details import ErrorResponseDetails
from .lead_mode import LeadMode
from .lead_payload import LeadPayload
from .sale_payload import SalePayload
from .track_response import TrackResponse

__all__ = (
    "ErrorResponse",
    "ErrorResponseDetails",
    "LeadMode",
    "LeadPayload",
    "SalePayload",
    "TrackResponse",
)
