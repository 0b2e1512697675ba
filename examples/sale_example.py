"""Sale tracking.

CMS_BEARER_TOKEN=... python examples/sale_example.py     # against the API (CMS_HOST to change host)
python examples/sale_example.py                          # no token: against the offline sandbox
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
    response = client.track_sale(
        click_id="id_123",
        event_name="purchase_completed",
        customer_external_id="user_42",
        invoice_id="inv_987",
        amount=4999,  # in cents
        currency="USD",  # 3-letter code
        customer_email="jane@example.com",  # optional
    )
    if response["success"]:
        print("Success:", response["data"])
    else:
        print("Error:", response)

    # Bad values never reach the API: they come back as a validation error.
    response = client.track_sale(
        click_id="id_123",
        event_name="purchase_completed",
        customer_external_id="user_42",
        invoice_id="inv_988",
        amount=49.99,  # not cents
        currency="dollars",
    )
    print("invalid sale:", response)
