"""The replica example of docs/http.md ("On the replica") must accept the master's messages."""

from __future__ import annotations

import re
from pathlib import Path

from django.db import models
from django.test.utils import isolate_apps

from dj_cqrs.replica.values import required_fields

HTTP_MD = Path(__file__).resolve().parents[3] / "docs" / "http.md"


@isolate_apps("tests.apps.replica_app")
def test_the_documented_extra_field_is_not_required_in_messages():
    # Regression: the page declared `changed_by = models.CharField(max_length=150, blank=True)`;
    # the replica requires every non-nullable field in the message, the master never sends this
    # one, so every SAVE was dead-lettered as missing_required_fields before cqrs_create ran.
    page = HTTP_MD.read_text()
    example = page[page.index("### On the replica") :]
    (declaration,) = re.findall(r"^\s+changed_by = (models\..+)$", example, re.M)
    field = eval(declaration, {"models": models})  # noqa: S307 - our own documentation

    class OrderRef(models.Model):
        id = models.IntegerField(primary_key=True)
        changed_by = field

        class Meta:
            app_label = "replica_app"

    assert "changed_by" not in {name for name, _ in required_fields(OrderRef)}
