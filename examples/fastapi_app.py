"""A FastAPI app that keeps the click id of visitors from tracked links and tracks their signups as leads,
without waiting for the API.

    pip install cms-python-client fastapi uvicorn
    python examples/fastapi_app.py        # then open http://127.0.0.1:8000/?cms_rf=id_123
    curl -b cookies -c cookies 'http://127.0.0.1:8000/?cms_rf=id_123'
    curl -b cookies -c cookies -H 'Content-Type: application/json' -d '{"email": "jane@example.com"}' \
        http://127.0.0.1:8000/signup

CMS_BEARER_TOKEN=... : against the API (CMS_HOST to change host). No token: against the offline sandbox,
which prints a line for each event it receives. CMS_OUTBOX_PATH: where queued events are kept; CMS_ATTRIBUTION:
last_click (default: a new click replaces the visitor's) or first_click (the first click is kept); PORT.
"""

import atexit
import contextlib
import os
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

from cms_python import Outbox
from cms_python.integrations.starlette import ClickIdMiddleware, cms_lifespan, cms_outbox
from cms_python.testing import SANDBOX_TOKEN, Sandbox

token = os.environ.get("CMS_BEARER_TOKEN")
host = None  # the token's: CMS_HOST, else the API
sandbox = None
if not token:
    print("CMS_BEARER_TOKEN is not set: tracking against the offline sandbox", flush=True)
    sandbox = Sandbox()
    serving = contextlib.ExitStack()  # the sandbox's server runs as long as this process
    atexit.register(serving.close)
    token, host = SANDBOX_TOKEN, serving.enter_context(sandbox.serve(log=print))

app = FastAPI(lifespan=cms_lifespan(os.environ.get("CMS_OUTBOX_PATH", "cms-outbox.sqlite3"), token=token, host=host))
app.add_middleware(ClickIdMiddleware, attribution=os.environ.get("CMS_ATTRIBUTION", "last_click"))


class Signup(BaseModel):
    email: str


@app.get("/")
async def landing(request: Request) -> dict[str, str | None]:
    # A visit from a tracked link (/?cms_rf=...) now has the cms_rf cookie, as CutMeShort's snippet would set.
    return {"message": "Welcome! POST your email to /signup", "click_id": request.state.cms_click_id}


@app.post("/signup")
async def signup(signup: Signup, request: Request, outbox: Annotated[Outbox, Depends(cms_outbox)]) -> dict[str, object]:
    user_id = signup.email  # your user's stable id
    if request.state.cms_click_id is None:
        return {"signed_up": user_id, "tracked": False}  # not from a tracked link: nothing to attribute
    # Queued on disk and sent in the background: the response does not wait for the API.
    result = outbox.track_lead(
        click_id=request.state.cms_click_id,
        event_name="signup_completed",
        customer_external_id=user_id,
        customer_email=signup.email,
    )
    return {"signed_up": user_id, "tracked": result["success"]}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
