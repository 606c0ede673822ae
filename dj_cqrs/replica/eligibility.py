"""Which path a replica model takes: set-based writes, or ``cqrs_save``/``cqrs_delete`` per row.

Set-based writes (:mod:`.group` for the consumer, :mod:`.upsert` for ``cqrs_bulk_load``) skip
``Model.save()``, its signals and the ``cqrs_*`` hooks, so they are only used for models where
they give the same result: :func:`per_row_reason` (bulk loads) and :func:`batch_reason` (the
consumer, which also deletes) say why a model keeps the per-row path, or None.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, models, router
from django.db.models import signals

from dj_cqrs.replica.managers import ReplicaManager


def replica_mixin() -> type:
    """``ReplicaMixin``, whose hooks a model may override.

    Imported here, not at module level: it is an abstract Django model, which can only be defined
    once the app registry is ready, and this module is imported by the transports before that.
    """
    from dj_cqrs.replica.mixins import ReplicaMixin  # Django's app loading: see the docstring

    return ReplicaMixin


def is_db_model(model: Any) -> bool:
    """A Django model whose rows the replica writes (not a handler, not ``CQRS_NO_DB_OPERATIONS``)."""
    return isinstance(model, type) and issubclass(model, models.Model) and not getattr(
        model, "CQRS_NO_DB_OPERATIONS", False
    )


def overridden(model: Any, base: Any, name: str) -> bool:
    """Whether ``model`` (a class) has its own ``name`` instead of ``base``'s."""
    mine = getattr(model, name, None)
    theirs = getattr(base, name, None)
    return getattr(mine, "__func__", mine) is not getattr(theirs, "__func__", theirs)


SAFE_PRE_SAVE = (
    models.Field.pre_save,
    models.DateField.pre_save,
    models.DateTimeField.pre_save,
    models.TimeField.pre_save,
)


def per_row_reason(model: Any) -> str | None:
    """Why ``model`` must be applied row by row through ``cqrs_save`` (None: set-based is exact).

    Set-based writes skip ``Model.save()``, its signals and ``cqrs_create``/``cqrs_update``, so
    any model that customises them, and any field whose value is computed at save time, keeps
    the consumer's per-row path.
    """
    if not is_db_model(model):
        return "CQRS_NO_DB_OPERATIONS"
    if getattr(model, "CQRS_CUSTOM_SERIALIZATION", False):
        return "CQRS_CUSTOM_SERIALIZATION"
    for name in ("cqrs_save", "cqrs_create", "cqrs_update"):
        if overridden(model, replica_mixin(), name):
            return f"{name} is overridden"
    if model.save is not models.Model.save:
        return "save() is overridden"
    manager = model._meta.managers_map.get("cqrs")
    if not isinstance(manager, ReplicaManager):
        return "no ReplicaManager 'cqrs'"
    for name in ("save_instance", "create_instance", "update_instance", "_map_save_data"):
        if overridden(type(manager), ReplicaManager, name):
            return f"cqrs manager {name} is overridden"
    if model._meta.proxy or model._meta.parents:
        return "multi-table or proxy model"
    for signal in (signals.pre_save, signals.post_save):
        if signal.has_listeners(model):
            return "pre_save/post_save receivers"
    for field in model._meta.concrete_fields:
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            return f"field {field.name} has auto_now/auto_now_add"
        if type(field).pre_save not in SAFE_PRE_SAVE:
            return f"field {field.name} computes its value at save time"
        if getattr(field, "db_default", models.NOT_PROVIDED) is not models.NOT_PROVIDED:
            return f"field {field.name} has a db_default"
        if getattr(field, "generated", False) or not plain_placeholder(model, field):
            return f"field {field.name} needs a custom SQL placeholder"
    return None


def plain_placeholder(model: Any, field: Any) -> bool:
    if not hasattr(field, "get_placeholder"):
        return True
    connection = connections[router.db_for_write(model)]
    try:
        return bool(field.get_placeholder(b"", None, connection) == "%s")
    except Exception:  # noqa: BLE001 - a placeholder needing a compiler: not a plain one
        return False


def related_models(model: Any) -> frozenset[Any]:
    """Other models ``model`` is linked to by a relation, in either direction."""
    related = set()
    for field in model._meta.get_fields(include_hidden=True):
        other = getattr(field, "related_model", None)
        if isinstance(other, type) and other is not model:
            related.add(other)
    return frozenset(related)


def batch_reason(model: Any) -> str | None:
    """Why ``model`` keeps the per-message path (None: the set-based path gives the same result)."""
    reason = per_row_reason(model)
    if reason is not None:
        return reason
    if overridden(model, replica_mixin(), "cqrs_delete"):
        return "cqrs_delete is overridden"
    manager = model._meta.managers_map["cqrs"]
    if overridden(type(manager), ReplicaManager, "delete_instance"):
        return "cqrs manager delete_instance is overridden"
    for field in model._meta.get_fields(include_hidden=True):
        if getattr(field, "related_model", None) is model:
            # A delete cascades (or sets null) to rows of the same group: not in the replayed state.
            return "relation to itself"
    return None


__all__ = ["batch_reason", "is_db_model", "overridden", "per_row_reason", "related_models", "replica_mixin"]
