"""Run master-side steps given as JSON (stdin or argument), then print the master state.

Steps: {"op": "create"|"update"|"delete"|"sync"|"bulk_create"|"bulk_update"|"atomic",
        "model": "product"|"tag", "id": ..., "fields": {...}, "queue": ..., "steps": [...]}
Values are strings/numbers as JSON allows; fields are converted with the model field's to_python.
"""

import json
import os
import signal
import sys

from django.core.management.base import BaseCommand
from django.db import transaction

from catalog.models import Category, Gadget, Product, Tag
from state_dump import dump

MODELS = {"product": Product, "tag": Tag, "gadget": Gadget}


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


def run(step):
    op = step["op"]
    if op == "atomic":
        with transaction.atomic():
            for inner in step["steps"]:
                run(inner)
        return
    if op == "sql":
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(step["sql"], step.get("params", []))
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
        obj = model.objects.get(pk=step["id"])
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
        self.stdout.write(dump({"it_product": Product, "it_tag": Tag, "it_gadget": Gadget}))
