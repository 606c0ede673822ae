"""Service A of the domain-event tests: emits events (``it_emit``) and has a model event source
(``shop.Challenge``). No master model: ``emit()`` needs none."""

from common_settings import *  # noqa: F401,F403
from events_settings import DATABASES, events_cqrs  # noqa: F401

INSTALLED_APPS = ["django.contrib.contenttypes", "dj_cqrs", "shop"]
CQRS = events_cqrs()
