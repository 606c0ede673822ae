"""Registries of master and replica models, keyed by ``CQRS_ID``.

Registries are instances (``master_registry``, ``replica_registry``) with ``clear()``; a duplicate
``CQRS_ID`` is recorded and reported by the system check ``dj_cqrs.E020`` instead of raising at
class-creation time.
"""

from __future__ import annotations

from typing import Any


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
