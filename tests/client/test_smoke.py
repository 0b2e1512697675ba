from ..conftest import TOKEN


def test_lead_reaches_the_server(client, server):
    result = client.track_lead(click_id="id_123", event_name="signup_started", customer_external_id="user_42")
    assert result == {"success": True, "message": "Event tracked successfully", "data": {"id": "evt_1"}}
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/track/lead")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.json == {"clickId": "id_123", "eventName": "signup_started", "customerExternalId": "user_42"}
