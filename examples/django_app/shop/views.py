from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from cms_python.integrations.django import outbox

PAGE = """<!doctype html>
<title>Shop</title>
<p>Welcome! Your click id: {}</p>
<form method="post" action="/signup">
  <input type="hidden" name="csrfmiddlewaretoken" value="{}">
  <input name="email" type="email" placeholder="you@example.com" required> <button>Sign up</button>
</form>
"""


def landing(request: HttpRequest) -> HttpResponse:
    # A visit from a tracked link (/?cms_rf=...) now has the cms_rf cookie, as CutMeShort's snippet would set.
    return HttpResponse(format_html(PAGE, request.cms_click_id, get_token(request)))


@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    email = request.POST["email"]
    user_id = email  # your user's stable id
    if request.cms_click_id is None:
        return JsonResponse({"signed_up": user_id, "tracked": False})  # not from a tracked link
    # Queued on disk and sent in the background: the response does not wait for the API.
    result = outbox().track_lead(
        click_id=request.cms_click_id,
        event_name="signup_completed",
        customer_external_id=user_id,
        customer_email=email,
    )
    return JsonResponse({"signed_up": user_id, "tracked": result["success"]})
