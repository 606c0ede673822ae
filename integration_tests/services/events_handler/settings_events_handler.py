"""Service B of the domain-event tests: event handlers (``sink.handlers``); with IT_SINK_REPLICA=1
also a replica model (``mirror``), so that one queue serves handlers and a replica model."""

import os

from common_settings import *  # noqa: F401,F403
from events_settings import DATABASES, events_cqrs  # noqa: F401

INSTALLED_APPS = ["django.contrib.contenttypes", "dj_cqrs", "sink"]
if os.environ.get("IT_SINK_REPLICA") == "1":
    INSTALLED_APPS.append("mirror")
CQRS = events_cqrs()
