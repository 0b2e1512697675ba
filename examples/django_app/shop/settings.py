"""Settings of the example shop: only what it needs, and CutMeShort's."""

import atexit
import contextlib
import os
from pathlib import Path

from cms_python.testing import SANDBOX_TOKEN, Sandbox

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-not-a-secret"  # noqa: S105 - an example's
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "shop.urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Sets request.cms_click_id, and the cms_rf cookie when the URL brings a click id.
    "cms_python.integrations.django.ClickIdMiddleware",
]

# CutMeShort. With a token in the environment, CMS_BEARER_TOKEN and CMS_HOST are read from there.
CMS_OUTBOX_PATH = os.environ.get("CMS_OUTBOX_PATH", str(BASE_DIR / "cms-outbox.sqlite3"))
CMS_ATTRIBUTION = os.environ.get("CMS_ATTRIBUTION", "last_click")  # or "first_click"
if not os.environ.get("CMS_BEARER_TOKEN"):
    print("CMS_BEARER_TOKEN is not set: tracking against the offline sandbox", flush=True)
    SANDBOX = Sandbox()
    _serving = contextlib.ExitStack()  # the sandbox's server runs as long as this process
    atexit.register(_serving.close)
    CMS_HOST = _serving.enter_context(SANDBOX.serve(log=print))
    CMS_BEARER_TOKEN = SANDBOX_TOKEN
