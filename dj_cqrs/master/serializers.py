"""Model → ``instance_data`` serialization (the default one, and ``CQRS_SERIALIZER``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models
from django.utils.module_loading import import_string

from dj_cqrs.constants import ALL_BASIC_FIELDS
from dj_cqrs.encoding import to_json_value
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.master.hooks import overrides

_FIELDS_ATTR = "_cqrs_serialized_fields"
_LAYOUT_ATTR = "_cqrs_serialized_layout"
_CQRS_FIELDS = ("cqrs_revision", "cqrs_updated")
_JSON_NATIVE = frozenset({str, int, bool, float})
_SERIALIZER_ATTR = "_cqrs_serializer_cls"
#: Set on rows read through ``relate_cqrs_serialization`` for a message: ``to_cqrs_dict`` does not
#: read them again.
FRESH_ROW_ATTR = "_cqrs_fresh_row"


def serialized_fields(model: type[models.Model]) -> list[tuple[str, str]]:
    """``[(name, attname)]`` of the concrete fields the default serializer writes."""
    cached = model.__dict__.get(_FIELDS_ATTR)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    spec = getattr(model, "CQRS_FIELDS", ALL_BASIC_FIELDS)
    concrete = [f for f in model._meta.concrete_fields if f.name not in _CQRS_FIELDS]
    if spec != ALL_BASIC_FIELDS:
        wanted = set(spec)
        concrete = [f for f in concrete if f.name in wanted]
    result = [(f.name, f.attname) for f in concrete]
    setattr(model, _FIELDS_ATTR, result)
    return result


#: A serialized row's key order: runs of plain fields, each followed by the ``cqrs_*`` field
#: written after it ("" after the last run).
Layout = tuple[tuple[tuple[tuple[str, str], ...], str], ...]


def serialized_layout(model: type[models.Model]) -> Layout:
    """The key order of ``instance_data``, found once per model.

    As django-cqrs writes it: the concrete fields in ``_meta`` order, where ``cqrs_revision`` and
    ``cqrs_updated`` stand where the mixin puts them when ``CQRS_FIELDS`` includes them (always
    with ``'__all__'``), and at the end otherwise.
    """
    cached = model.__dict__.get(_LAYOUT_ATTR)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    plain = serialized_fields(model)
    spec = getattr(model, "CQRS_FIELDS", ALL_BASIC_FIELDS)
    included = set(_CQRS_FIELDS) if spec == ALL_BASIC_FIELDS else set(spec) & set(_CQRS_FIELDS)
    plain_names = {name for name, _ in plain}
    layout: list[tuple[tuple[tuple[str, str], ...], str]] = []
    run: list[tuple[str, str]] = []
    placed: list[str] = []
    fields = iter(plain)
    for field in model._meta.concrete_fields:
        if field.name in included:
            layout.append((tuple(run), field.name))
            placed.append(field.name)
            run = []
        elif field.name in plain_names:
            run.append(next(fields))
    layout.append((tuple(run), ""))
    for name in _CQRS_FIELDS:
        if name not in placed:
            layout.append(((), name))
    result = tuple(layout)
    setattr(model, _LAYOUT_ATTR, result)
    return result


def forget_cached(model: type[models.Model]) -> None:
    for attr in (_FIELDS_ATTR, _LAYOUT_ATTR, _SERIALIZER_ATTR):
        if attr in model.__dict__:
            delattr(model, attr)


def is_expression(value: Any) -> bool:
    return hasattr(value, "resolve_expression") and not isinstance(value, models.Model)


def refresh_saved_expressions(instance: models.Model, using: str, update_fields: Any = None) -> None:
    """After a save: fields written from an expression (``F('n') + 1``, ``Upper(...)``) get their
    stored value, in one query that runs only when there are such fields.

    ``update_fields`` limits it to the fields that save wrote (a field left out keeps its pending
    expression, as Django leaves it). A pending ``cqrs_revision`` bump alone is not read here: the
    outbox reads it back with its INSERT (or ``MasterMixin.save`` reads it).
    """
    data = instance.__dict__
    stale: list[str] = []
    for field in instance._meta.concrete_fields:
        attname = field.attname
        if (
            attname != "cqrs_revision"
            and is_expression(data.get(attname))
            and (update_fields is None or field.name in update_fields or attname in update_fields)
        ):
            stale.append(attname)
    if stale:
        if is_expression(data.get("cqrs_revision")):
            stale.append("cqrs_revision")
        instance.refresh_from_db(using=using, fields=stale)


def refresh_expressions(instance: models.Model, using: str | None) -> None:
    """Replace F()/expression values still on the instance with their stored values."""
    data = instance.__dict__
    stale = [f.attname for f in instance._meta.concrete_fields if is_expression(data.get(f.attname))]
    if stale:
        instance.refresh_from_db(using=using, fields=stale)


def default_serialize(instance: models.Model) -> dict[str, Any]:
    return serialize_values(type(instance), instance.__dict__)


def serialize_values(model: type[models.Model], data: Mapping[str, Any]) -> dict[str, Any]:
    """The default serialization of a row given as ``{attname: value}`` (e.g. from ``values()``)."""
    result: dict[str, Any] = {}
    for fields, cqrs_field in serialized_layout(model):
        for name, attname in fields:
            value = data.get(attname)
            result[name] = value if value is None or type(value) in _JSON_NATIVE else to_json_value(value)
        if cqrs_field == "cqrs_revision":
            result["cqrs_revision"] = data.get("cqrs_revision")
        elif cqrs_field:
            updated = data.get("cqrs_updated")
            result["cqrs_updated"] = None if updated is None else str(updated)
    return result


def add_cqrs_fields(result: dict[str, Any], instance: models.Model) -> None:
    result["cqrs_revision"] = instance.__dict__.get("cqrs_revision")
    updated = instance.__dict__.get("cqrs_updated")
    result["cqrs_updated"] = None if updated is None else str(updated)


def serializer_class(model: type[models.Model]) -> Any | None:
    path = getattr(model, "CQRS_SERIALIZER", None)
    if not path:
        return None
    cached = model.__dict__.get(_SERIALIZER_ATTR)
    if cached is not None:
        return cached
    try:
        cls = import_string(path) if isinstance(path, str) else path
    except ImportError as exc:
        raise ConfigurationError(
            f"dj_cqrs.E033: CQRS_SERIALIZER {path!r} of {model.__name__} cannot be imported: {exc}"
        ) from exc
    setattr(model, _SERIALIZER_ATTR, cls)
    return cls


def class_serialize(instance: models.Model, cls: Any) -> dict[str, Any]:
    data = dict(cls(instance).data)
    data = {k: to_json_value(v) for k, v in data.items()}
    add_cqrs_fields(data, instance)
    return data


def serialize(instance: Any, sync: bool = False) -> dict[str, Any]:
    """``instance_data`` of ``instance``: the model's own ``to_cqrs_dict`` when it overrides it."""
    if overrides(type(instance), "to_cqrs_dict"):
        return instance.to_cqrs_dict(using=instance._state.db, sync=sync)  # type: ignore[no-any-return]
    cls = serializer_class(type(instance))
    if cls is None:
        return default_serialize(instance)
    return class_serialize(instance, cls)
