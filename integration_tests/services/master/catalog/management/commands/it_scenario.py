"""Run master-side steps given as JSON (stdin or argument), then print the master state.

Steps: {"op": "create"|"update"|"delete"|"sync"|"bulk_create"|"bulk_update"|"atomic",
        "model": "product"|"tag"|"note", "id": ..., "fields": {...}, "queue": ...,
        "steps": [...], "same_object": true|false}
       {"op": "emit", "name": ..., "key": ..., "data": {...}, "meta": {...}} (dj_cqrs only)
Values are strings/numbers as JSON allows; fields are converted with the model field's to_python.
"""

import json
import os
import signal
import sys

from django.core.management.base import BaseCommand
from django.db import transaction

from catalog.models import Category, Note, Product, Tag
from state_dump import dump
from catalog.extra import extra_dumps, extra_models  # noqa: I001

MODELS = {"product": Product, "tag": Tag, "note": Note, **extra_models()}


def convert(model, fields):
    result = {}
    for name, value in fields.items():
        field = model._meta.get_field(name)
        if field.is_relation:
            if value is not None:
                Category.objects.get_or_create(pk=value, defaults={"name": f"cat {value}"})
            result[field.attname] = value
        else:
            result[name] = field.to_python(value) if value is not None else None
    return result


def run(step, objects=None):
    """Run one step. ``objects`` (inside ``{"op": "atomic", "same_object": true}``) makes updates
    of a row reuse one Python object, as code that saves the same instance twice does."""
    op = step["op"]
    if op == "atomic":
        with transaction.atomic():
            shared = {} if step.get("same_object") else None
            for inner in step["steps"]:
                run(inner, shared)
        return
    if op == "sql":
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(step["sql"], step.get("params", []))
        return
    if op == "emit":
        # A domain event (dj_cqrs only: steps for a django-cqrs master never contain it), in the
        # current transaction when inside {"op": "atomic"}.
        from dj_cqrs.events import emit

        emit(step["name"], step["key"], step.get("data", {}), meta=step.get("meta"))
        return
    if op == "crash_after_commit":
        # The process dies right after COMMIT, before any other commit hook (publishing) runs.
        with transaction.atomic():
            transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
            for inner in step["steps"]:
                run(inner)
        return
    model = MODELS[step.get("model", "product")]
    if op == "create":
        model.objects.create(pk=model._meta.pk.to_python(step["id"]), **convert(model, step.get("fields", {})))
    elif op == "update":
        key = (model, str(step["id"]))
        if objects is not None and key in objects:
            obj = objects[key]
        else:
            obj = model.objects.get(pk=step["id"])
            if objects is not None:
                objects[key] = obj
        for name, value in convert(model, step.get("fields", {})).items():
            setattr(obj, name, value)
        obj.save()
    elif op == "delete":
        model.objects.get(pk=step["id"]).delete()
    elif op == "sync":
        obj = model.objects.get(pk=step["id"])
        assert obj.cqrs_sync(queue=step.get("queue")), "cqrs_sync returned False"
    elif op == "bulk_create":
        objs = [model(pk=item["id"], **convert(model, item.get("fields", {}))) for item in step["items"]]
        model.cqrs.bulk_create(objs)
    elif op == "qs_update":
        model.objects.filter(pk__in=step["ids"]).update(**convert(model, step.get("fields", {})))
    elif op == "django_bulk_update":
        objs = list(model.objects.filter(pk__in=[item["id"] for item in step["items"]]).order_by("pk"))
        by_pk = {str(item["id"]): convert(model, item["fields"]) for item in step["items"]}
        for obj in objs:
            for name, value in by_pk[str(obj.pk)].items():
                setattr(obj, name, value)
        model.objects.bulk_update(objs, step["fields"])
    elif op == "bulk_update":
        model.cqrs.bulk_update(model.objects.filter(pk__in=step["ids"]), **convert(model, step.get("fields", {})))
    else:
        raise ValueError(f"unknown op {op!r}")


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("steps", nargs="?", default="-")

    def handle(self, *args, **options):
        raw = sys.stdin.read() if options["steps"] == "-" else options["steps"]
        for step in json.loads(raw):
            run(step)
        self.stdout.write(dump({"it_product": Product, "it_tag": Tag, "it_note": Note, **extra_dumps()}, optional=("it_gadget",)))
