"""Run master-side steps given as JSON (stdin or argument), then print the master state.

Steps: {"op": "create"|"update"|"delete"|"sync"|"bulk_create"|"bulk_update"|"atomic",
        "model": "product"|"tag"|"note", "id": ..., "fields": {...}, "queue": ...,
        "steps": [...], "same_object": true|false}
Values are strings/numbers as JSON allows; fields are converted with the model field's to_python.
"""

import json
import sys

from django.core.management.base import BaseCommand
from django.db import transaction

from catalog.models import Category, Note, Product, Tag
from state_dump import dump

MODELS = {"product": Product, "tag": Tag, "note": Note}


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
        self.stdout.write(dump({"it_product": Product, "it_tag": Tag, "it_note": Note}))
