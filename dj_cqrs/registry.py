"""Registries of master and replica models, keyed by ``CQRS_ID``.

Registries are instances (``master_registry``, ``replica_registry``) with ``clear()``; a duplicate
``CQRS_ID`` is recorded and reported by the system check ``dj_cqrs.E020`` instead of raising at
class-creation time.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps

from dj_cqrs.exceptions import ConfigurationError

#: The problem and hint of ``dj_cqrs.E010`` (a system check of every CQRS model, and the error a
#: save raises when the check did not run).
NOT_INSTALLED = (
    "'dj_cqrs' is not in INSTALLED_APPS, so its tables (the outbox, tombstones) and checks are"
    " missing."
)
NOT_INSTALLED_HINT = "Add 'dj_cqrs' to INSTALLED_APPS, then run manage.py migrate."


def app_model(name: str) -> Any:
    """A model of the ``dj_cqrs`` app, from the app registry; ``ConfigurationError`` (E010) when
    the app is not installed."""
    try:
        return apps.get_model("dj_cqrs", name)
    except LookupError as exc:
        if apps.is_installed("dj_cqrs"):
            raise
        raise ConfigurationError(f"dj_cqrs.E010: {NOT_INSTALLED} {NOT_INSTALLED_HINT}") from exc


def not_installed_errors(model: Any) -> list[Any]:
    """``dj_cqrs.E010`` for ``model.check()``: the app's own checks do not run without it."""
    from django.core import checks

    if apps.is_installed("dj_cqrs"):
        return []
    return [checks.Error(NOT_INSTALLED, hint=NOT_INSTALLED_HINT, obj=model, id="dj_cqrs.E010")]


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.models: dict[str, Any] = {}
        self.duplicates: list[tuple[str, Any, Any]] = []

    def register_model(self, model_cls: Any) -> None:
        cqrs_id = getattr(model_cls, "CQRS_ID", None)
        if not cqrs_id:
            self.duplicates.append(("", model_cls, None))
            return
        existing = self.models.get(cqrs_id)
        if existing is not None and existing is not model_cls:
            if _same_model(existing, model_cls):
                # The same model class re-created (e.g. module reloaded): keep the newest.
                self.models[cqrs_id] = model_cls
                return
            self.duplicates.append((cqrs_id, existing, model_cls))
            return
        self.models[cqrs_id] = model_cls

    def get_model_by_cqrs_id(self, cqrs_id: str) -> Any | None:
        return self.models.get(cqrs_id)

    def unregister(self, cqrs_id: str) -> None:
        self.models.pop(cqrs_id, None)

    def clear(self) -> None:
        self.models.clear()
        self.duplicates.clear()

    def __contains__(self, cqrs_id: object) -> bool:
        return cqrs_id in self.models

    def __iter__(self) -> Any:
        return iter(list(self.models.values()))

    def __len__(self) -> int:
        return len(self.models)


def _same_model(a: Any, b: Any) -> bool:
    return bool(
        getattr(a, "__module__", None) == getattr(b, "__module__", None)
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)
    )


master_registry = Registry("master")
replica_registry = Registry("replica")
