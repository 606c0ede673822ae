"""This service's CQRS rows as canonical JSON, so that ``demo.py`` can compare them field by field."""

import datetime
import decimal
import json

from storefront.models import CustomerRef, ProductRef

MODELS = {"product": ProductRef, "customer": CustomerRef}


def canonical(value):
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).isoformat()
    if isinstance(value, (datetime.date, decimal.Decimal)):
        return str(value)
    return value


def state():
    return {
        cqrs_id: {
            str(obj.pk): {f.name: canonical(getattr(obj, f.attname)) for f in model._meta.concrete_fields}
            for obj in model.objects.order_by("pk")
        }
        for cqrs_id, model in MODELS.items()
    }


def state_json():
    return json.dumps(state(), sort_keys=True)
