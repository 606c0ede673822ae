"""Settings of the first-hour project: a new user's service, shaped by environment variables.

FH_DB: the SQLite file (default: fh.sqlite3 beside this file); FH_NO_DJ_CQRS=1 leaves "dj_cqrs"
out of INSTALLED_APPS; FH_TRANSPORT (unset: no CQRS['transport'] key), FH_URL, FH_EXCHANGE and
FH_QUEUE fill CQRS; FH_REPLICA=1 adds the replica model.
"""

import os

BASE = os.path.dirname(os.path.abspath(__file__))
SECRET_KEY = "first-hour"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
if os.environ.get("FH_NO_DJ_CQRS") != "1":
    INSTALLED_APPS.append("dj_cqrs")
INSTALLED_APPS.append("shop")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("FH_DB", os.path.join(BASE, "fh.sqlite3")),
    }
}
CQRS = {"exchange": os.environ.get("FH_EXCHANGE", "cqrs")}
for key in ("transport", "url", "queue"):
    value = os.environ.get(f"FH_{key.upper()}")
    if value:
        CQRS[key] = value
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django-cqrs": {"handlers": ["console"], "level": "WARNING"}},
}
