"""Canonical JSON dump of CQRS tables, for comparing a master with its replicas field by field."""

import datetime
import decimal
import json
import uuid


def canonical(value):
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return value


def dump(models_by_id, optional=()):
    """JSON of every table; the ``optional`` ones (apps a peer may not have) only when not empty."""
    result = {}
    for cqrs_id, model in models_by_id.items():
        rows = {}
        for obj in model.objects.order_by("pk"):
            row = {}
            for field in model._meta.concrete_fields:
                if field.name == "cqrs_updated":
                    continue
                value = getattr(obj, field.attname)
                row[field.name] = canonical(value)
            rows[str(obj.pk)] = row
        if rows or cqrs_id not in optional:
            result[cqrs_id] = rows
    return json.dumps(result, sort_keys=True)
