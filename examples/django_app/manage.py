#!/usr/bin/env python
"""A minimal Django project that keeps the click id of visitors from tracked links and tracks their signups as
leads, without waiting for the API.

    pip install cms-python-client django
    python examples/django_app/manage.py runserver    # then open http://127.0.0.1:8000/?cms_rf=id_123

CMS_BEARER_TOKEN=... : against the API (CMS_HOST to change host). No token: against the offline sandbox,
which prints a line for each event it receives. CMS_OUTBOX_PATH: where queued events are kept; CMS_ATTRIBUTION:
last_click (default: a new click replaces the visitor's) or first_click (the first click is kept).
The integration is in shop/settings.py (MIDDLEWARE and CMS_*) and shop/views.py.
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
