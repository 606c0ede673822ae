import os

from common_settings import *  # noqa: F401,F403
from common_settings import cqrs_settings

CQRS = cqrs_settings("master")

if TRIGGERS:  # noqa: F405
    INSTALLED_APPS = [*INSTALLED_APPS[:2], "pgtrigger", *INSTALLED_APPS[2:], "gadgets"]  # noqa: F405

# IT_HTTP_TOKENS (dj_cqrs only, comma-separated): serve dj_cqrs.urls (HTTP pull) under /cqrs/ with
# these bearer tokens, e.g. from `manage.py runserver` (integration_tests/test_http_pull.py).
if os.environ.get("IT_HTTP_TOKENS"):
    CQRS["http"] = {"tokens": os.environ["IT_HTTP_TOKENS"].split(",")}
    ROOT_URLCONF = "master_urls"
    ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

# IT_WEBHOOKS (dj_cqrs only): CQRS["webhooks"] as JSON, e.g. small attempts and retry delays
# (integration_tests/test_webhooks.py).
if os.environ.get("IT_WEBHOOKS"):
    import json

    CQRS["webhooks"] = json.loads(os.environ["IT_WEBHOOKS"])

# IT_AUDIT=1 (dj_cqrs only): auth, sessions and dj_cqrs.middleware.AuditMiddleware, with the views
# of audit_urls.py, for requests made by the Django test client (integration_tests/test_audit.py).
if os.environ.get("IT_AUDIT"):
    INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.auth", "django.contrib.sessions"]  # noqa: F405
    MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "dj_cqrs.middleware.AuditMiddleware",
    ]
    ROOT_URLCONF = "audit_urls"
    ALLOWED_HOSTS = ["testserver"]
