"""Django in a process of its own, for tests/outbox/test_postgres.py (Django's settings are once per process):
`python -m tests.outbox.django_child URL SANDBOX_URL DATABASE_SETTING`.

An order and its lead, in a transaction rolled back, in one committed, and outside any (autocommit); through
`outbox().within(connection)` (`CMS_OUTBOX_PATH` = the URL), or through `outbox()` alone (`CMS_OUTBOX_DATABASE`).
Prints `{"flushed", "orders"}`.
"""

from __future__ import annotations

import json
import sys

import django
from django.conf import settings
from psycopg.conninfo import conninfo_to_dict


class Rollback(Exception):
    pass


def main(url: str, sandbox_url: str, database_setting: str) -> None:
    parts = conninfo_to_dict(url)
    outbox_setting = {"CMS_OUTBOX_DATABASE": "default"} if database_setting == "1" else {"CMS_OUTBOX_PATH": url}
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": parts["dbname"],
                "USER": parts["user"],
                "PASSWORD": parts.get("password", ""),
                "HOST": parts["host"],
                "PORT": parts["port"],
                "OPTIONS": {"options": parts["options"]},
            }
        },
        INSTALLED_APPS=[],
        CMS_BEARER_TOKEN="django-child-token-5e1",
        CMS_HOST=sandbox_url,
        **outbox_setting,
    )
    django.setup()
    from django.db import connection, transaction  # noqa: PLC0415 - once settings are configured

    from cms_python.integrations.django import outbox  # noqa: PLC0415

    def order_and_lead(name: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO orders VALUES (%s)", [name])
        tracker = outbox() if database_setting == "1" else outbox().within(connection)
        result = tracker.track_lead(click_id="c", event_name=name, customer_external_id="django-user")
        assert result["success"], result

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE orders (name text)")
    try:
        with transaction.atomic():
            order_and_lead("rolled_back")
            raise Rollback
    except Rollback:
        pass
    with transaction.atomic():
        order_and_lead("committed")
    order_and_lead("autocommit")
    flushed = outbox().flush(timeout=30)
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM orders")
        orders = [name for (name,) in cursor.fetchall()]
    outbox().close()
    print(json.dumps({"flushed": flushed, "orders": orders}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
