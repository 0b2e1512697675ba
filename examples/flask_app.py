"""A Flask app that keeps the click id of visitors from tracked links and tracks their signups as leads,
without waiting for the API.

    pip install cms-python-client flask
    python examples/flask_app.py        # then open http://127.0.0.1:5000/?cms_rf=id_123 and sign up

CMS_BEARER_TOKEN=... : against the API (CMS_HOST to change host). No token: against the offline sandbox,
which prints a line for each event it receives. CMS_OUTBOX_PATH: where queued events are kept; CMS_ATTRIBUTION:
last_click (default: a new click replaces the visitor's) or first_click (the first click is kept); PORT.
"""

import atexit
import contextlib
import os

from flask import Flask, g, request
from markupsafe import escape

from cms_python.integrations.flask import CMS
from cms_python.testing import SANDBOX_TOKEN, Sandbox

app = Flask(__name__)
app.config["CMS_OUTBOX_PATH"] = os.environ.get("CMS_OUTBOX_PATH", "cms-outbox.sqlite3")
# With a token, CMS_BEARER_TOKEN and CMS_HOST come from the environment (app.config may set them too).
sandbox = None
if not os.environ.get("CMS_BEARER_TOKEN"):
    print("CMS_BEARER_TOKEN is not set: tracking against the offline sandbox", flush=True)
    sandbox = Sandbox()
    serving = contextlib.ExitStack()  # the sandbox's server runs as long as this process
    atexit.register(serving.close)
    app.config["CMS_HOST"] = serving.enter_context(sandbox.serve(log=print))
    app.config["CMS_BEARER_TOKEN"] = SANDBOX_TOKEN
cms = CMS(app, attribution=os.environ.get("CMS_ATTRIBUTION", "last_click"))

PAGE = """<!doctype html>
<title>Shop</title>
<p>Welcome! Your click id: {click_id}</p>
<form method="post" action="/signup">
  <input name="email" type="email" placeholder="you@example.com" required> <button>Sign up</button>
</form>
"""


@app.get("/")
def landing() -> str:
    # A visit from a tracked link (/?cms_rf=...) now has the cms_rf cookie, as CutMeShort's snippet would set.
    # The click id comes from the visitor: escape it like any input.
    return PAGE.format(click_id=escape(g.cms_click_id))


@app.post("/signup")
def signup() -> dict[str, object]:
    email = request.form["email"]
    user_id = email  # your user's stable id
    if g.cms_click_id is None:
        return {"signed_up": user_id, "tracked": False}  # not from a tracked link: nothing to attribute
    # Queued on disk and sent in the background: the response does not wait for the API.
    result = cms.outbox.track_lead(
        click_id=g.cms_click_id,
        event_name="signup_completed",
        customer_external_id=user_id,
        customer_email=email,
    )
    return {"signed_up": user_id, "tracked": result["success"]}


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
