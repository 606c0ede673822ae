import os

from common_settings import *  # noqa: F401,F403
from common_settings import DATABASES, INSTALLED_APPS, cqrs_settings

CQRS = cqrs_settings("replica")

# IT_EVENT_HANDLERS=1 (dj_cqrs only): the it_events app registers a domain event handler, so this
# replica's queue is also bound for domain events (integration_tests/compat/test_mixed_fleet_events.py).
if os.environ.get("IT_EVENT_HANDLERS") == "1":
    INSTALLED_APPS = [*INSTALLED_APPS, "it_events"]

# IT_ORDER_RECORDER=1 (dj_cqrs only): it_product goes to the it_order recorder (a RawReplicaMixin
# handler writing every revision it applies) instead of catalog's ProductRef
# (integration_tests/test_cluster.py, partitioned queues).
if os.environ.get("IT_ORDER_RECORDER") == "1":
    INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "catalog"] + ["it_order"]

# IT_CONN_MAX_AGE: the database connections' lifetime, "none" (persistent) or seconds; unset
# keeps Django's default (0: a connection per request, which django-cqrs's consumer closes and
# opens again around every message). The benchmark sets it (bench/workloads/replica.py).
_conn_max_age = os.environ.get("IT_CONN_MAX_AGE", "")
if _conn_max_age:
    DATABASES["default"]["CONN_MAX_AGE"] = (
        None if _conn_max_age.lower() == "none" else int(_conn_max_age)
    )
