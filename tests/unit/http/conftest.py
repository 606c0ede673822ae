from __future__ import annotations

import copy

import pytest
from django.conf import settings
from django.test import override_settings

TOKEN = "s3cret-token"
OTHER = "other-token"


def cqrs_with(**sections):
    cqrs = copy.deepcopy(settings.CQRS)
    for name, values in sections.items():
        cqrs.setdefault(name, {}).update(values)
    return cqrs


@pytest.fixture
def pull_settings():
    """Mount dj_cqrs.urls under /cqrs/ and accept TOKEN and OTHER."""
    with override_settings(
        ROOT_URLCONF="tests.unit.http.urls_pull", CQRS=cqrs_with(http={"tokens": [TOKEN, OTHER]})
    ):
        yield
