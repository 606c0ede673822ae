"""F() expressions on master models (issue 10, gap 1)."""

from __future__ import annotations

from typing import Any

from django.db.models import F
from dmaster.models import Counter

from scenarios._base import captured_produce, payload_view


def check_fexpr_value_after_save() -> Any:
    with captured_produce() as sent:
        obj = Counter.objects.create(count=1)
        obj.count = F("count") + 1
        obj.save()
        after_first = obj.count
        obj.save()
        stored = Counter.objects.get(pk=obj.pk).count
    return {
        "after_first_save": after_first,
        "stored_after_second_save": stored,
        "revision": Counter.objects.get(pk=obj.pk).cqrs_revision,
        "payloads": [payload_view(p) for p in sent],
    }
