"""Master values as a replica model stores them, and the model's field lists (cached per class)."""

from __future__ import annotations

import decimal
from typing import Any

from django.db import models

from dj_cqrs.encoding import ExactFloat

_FIELD_NAMES_ATTR = "_cqrs_replica_field_names"
_FIELDS_BY_NAME_ATTR = "_cqrs_replica_fields_by_name"


def field_names(model: type[models.Model]) -> frozenset[str]:
    """Names and attnames of the concrete fields (computed once per model class)."""
    cached = model.__dict__.get(_FIELD_NAMES_ATTR)
    if cached is None:
        cached = frozenset(n for f in model._meta.concrete_fields for n in (f.name, f.attname))
        setattr(model, _FIELD_NAMES_ATTR, cached)
    return cached  # type: ignore[no-any-return]


_REQUIRED_ATTR = "_cqrs_replica_required_fields"


def required_fields(model: type[models.Model]) -> tuple[tuple[str, str], ...]:
    """``(name, attname)`` of the non-nullable concrete fields (computed once per model class)."""
    cached = model.__dict__.get(_REQUIRED_ATTR)
    if cached is None:
        cached = tuple((f.name, f.attname) for f in model._meta.concrete_fields if not f.null)
        setattr(model, _REQUIRED_ATTR, cached)
    return cached  # type: ignore[no-any-return]


_RELATION, _DECIMAL, _PARSED = 1, 2, 3


def _special_fields(model: type[models.Model]) -> dict[str, tuple[int, Any]]:
    """The fields whose values ``convert_values`` changes, by name (computed once per model)."""
    cached = model.__dict__.get(_FIELDS_BY_NAME_ATTR)
    if cached is None:
        cached = {}
        for f in model._meta.concrete_fields:
            if f.is_relation:
                cached[f.name] = (_RELATION, f)
            elif isinstance(f, models.DecimalField):
                cached[f.name] = (_DECIMAL, f)
            elif isinstance(f, (models.BinaryField, models.DurationField, models.TimeField)):
                cached[f.name] = (_PARSED, f)
        setattr(model, _FIELDS_BY_NAME_ATTR, cached)
    return cached  # type: ignore[no-any-return]


def convert_values(model: type[models.Model], data: dict[str, Any], copy: bool = True) -> dict[str, Any]:
    """Make master values assignable: FK ids under ``attname``, exact decimals, parsed binaries.
    ``copy=False`` converts ``data`` itself (a dict the caller just built) and returns it."""
    special = _special_fields(model)
    result = dict(data) if copy else data
    for key, (kind, field) in special.items():
        if key not in result:
            continue
        value = result[key]
        if kind == _RELATION:
            if not isinstance(value, models.Model):
                del result[key]
                result[field.attname] = value
        elif kind == _DECIMAL:
            if isinstance(value, float):
                result[key] = value.as_decimal() if isinstance(value, ExactFloat) else decimal.Decimal(repr(value))
        elif isinstance(value, str):
            result[key] = field.to_python(value)
    return result


def assignable(model: Any, mapped_data: dict[str, Any]) -> dict[str, Any]:
    """``mapped_data`` as the default ``cqrs_create``/``cqrs_update`` write it: foreign keys under
    their attname, exact decimals, parsed times and binaries (unchanged with
    ``CQRS_CUSTOM_SERIALIZATION``, whose data is the model's own business)."""
    if getattr(model, "CQRS_CUSTOM_SERIALIZATION", False):
        return mapped_data
    return convert_values(model, mapped_data)


__all__ = ["assignable", "convert_values", "field_names", "required_fields"]
