import os

from common_settings import *  # noqa: F401,F403
from common_settings import DATABASES, cqrs_settings

CQRS = cqrs_settings("replica")

# IT_CONN_MAX_AGE: the database connections' lifetime, "none" (persistent) or seconds; unset
# keeps Django's default (0: a connection per request, which django-cqrs's consumer closes and
# opens again around every message). The benchmark sets it (bench/workloads/replica.py).
_conn_max_age = os.environ.get("IT_CONN_MAX_AGE", "")
if _conn_max_age:
    DATABASES["default"]["CONN_MAX_AGE"] = (
        None if _conn_max_age.lower() == "none" else int(_conn_max_age)
    )
