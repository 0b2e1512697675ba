"""Lead tracking and deferred attribution.

CMS_BEARER_TOKEN=... python examples/lead_example.py     # against the API (CMS_HOST to change host)
python examples/lead_example.py                          # no token: against the offline sandbox
"""

import os

from cms_python import CMSClient
from cms_python.testing import Sandbox


def make_client() -> CMSClient:
    if os.environ.get("CMS_BEARER_TOKEN"):
        return CMSClient()  # reads CMS_BEARER_TOKEN and CMS_HOST
    print("CMS_BEARER_TOKEN is not set: using the offline sandbox\n")
    return Sandbox().client()


with make_client() as client:
    # A standard lead: the click and the customer in one event.
    response = client.track_lead(
        click_id="id_123",
        event_name="signup_started",
        customer_external_id="user_42",
        customer_name="Jane Doe",  # optional
        customer_email="jane@example.com",  # optional
    )
    print("standard lead:", response)

    # Deferred attribution, first call: store the click-to-customer association.
    response = client.track_lead(
        click_id="id_456",
        event_name="lead_captured",
        customer_external_id="user_43",
        mode="deferred",
    )
    print("deferred lead:", response)

    # Later calls: the same customer, without click_id.
    response = client.track_lead(
        event_name="kyc_completed",
        customer_external_id="user_43",
    )
    if response["success"]:
        print("follow-up event:", response["data"])
    else:
        print("Error:", response)
