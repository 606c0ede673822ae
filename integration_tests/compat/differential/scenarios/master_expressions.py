"""F() and other expressions assigned to master model fields (issue 10, gap 1)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Upper
from dmaster.models import Book, Counter, NarrowCounter, QuietCounter

from scenarios._base import captured_produce, documented, payload_view


def check_fexpr_increment_twice_previous_data() -> Any:
    with captured_produce() as sent:
        obj = Counter.objects.create(count=5)
        obj.count = F("count") + 1
        obj.save()
        obj.count = F("count") + 10
        obj.save()
    return {
        "count": obj.count,
        "stored": Counter.objects.get(pk=obj.pk).count,
        "revision": obj.cqrs_revision,
        "tracked": obj.get_tracked_fields_data(),
        "previous_data": [p.previous_data for p in sent],
        "instance_data": [p.instance_data for p in sent],
    }


def check_fexpr_multiply_and_revision_on_instance() -> Any:
    with captured_produce() as sent:
        obj = Counter.objects.create(count=1, name="a")
        obj.count = F("count") * 3
        obj.name = "b"
        obj.save()
    return {
        "count": obj.count,
        "name": obj.name,
        "revision": obj.cqrs_revision,
        "payloads": [payload_view(p) for p in sent],
    }


@documented("other expressions (`Upper(...)`, `Now()`) are sent as their `repr`")
def check_fexpr_function_expression() -> Any:
    with captured_produce() as sent:
        obj = Counter.objects.create(count=1, name="a")
        obj.name = Upper(Value("b"))
        obj.save()
    return {"name": obj.name, "payloads": [payload_view(p) for p in sent]}


@documented("other expressions (`Upper(...)`, `Now()`) are sent as their `repr`")
def check_fexpr_expression_on_create() -> Any:
    with captured_produce() as sent:
        obj = Counter.objects.create(count=2, name=Upper(Value("new")))
    return {
        "name": obj.name,
        "stored": Counter.objects.get(pk=obj.pk).name,
        "payloads": [payload_view(p) for p in sent],
    }


def check_fexpr_untracked_model_value_after_save() -> Any:
    with captured_produce() as sent:
        book = Book.objects.create(title="t", price=3)
        book.price = F("price") + 2
        book.save()
        book.save()
    return {
        "price": book.price,
        "stored": Book.objects.get(pk=book.pk).price,
        "payloads": [payload_view(p) for p in sent],
    }


@documented("holds the stored value right after `save()`")
def check_fexpr_field_outside_cqrs_fields() -> Any:
    with captured_produce() as sent:
        obj = NarrowCounter.objects.create(hits=1)
        obj.hits = F("hits") + 1
        obj.save()
        obj.name = "m"
        obj.save()
    return {
        "stored": NarrowCounter.objects.get(pk=obj.pk).hits,
        "previous_data": [p.previous_data for p in sent],
        "instance_data": [p.instance_data for p in sent],
    }


@documented("holds the stored value right after `save()`")
def check_fexpr_field_outside_cqrs_fields_value() -> Any:
    obj = NarrowCounter.objects.create(hits=1)
    obj.hits = F("hits") + 1
    obj.save()
    return {"hits": obj.hits}


@documented("holds the stored value right after `save()`")
def check_fexpr_not_published_model() -> Any:
    obj = QuietCounter.objects.create(count=1)
    obj.count = F("count") + 1
    obj.save()
    return {"count": obj.count, "stored": QuietCounter.objects.get(pk=obj.pk).count}


@documented("holds the stored value right after `save()`")
def check_fexpr_inside_transaction() -> Any:
    with captured_produce() as sent:
        obj = Counter.objects.create(count=1)
        with transaction.atomic():
            obj.count = F("count") + 1
            obj.save()
            inside = obj.count
        after = obj.count
    return {
        "inside": inside,
        "after_commit": after,
        "payload_counts": [p.instance_data["count"] for p in sent],
    }


def check_fexpr_after_commit_in_transaction() -> Any:
    with captured_produce() as sent:
        obj = Counter.objects.create(count=1)
        with transaction.atomic():
            obj.count = F("count") + 1
            obj.save()
        after = obj.count
        obj.save()
    return {
        "after_commit": after,
        "stored": Counter.objects.get(pk=obj.pk).count,
        "payloads": [payload_view(p) for p in sent],
    }
