"""django-cqrs compatible registry names; they delegate to :mod:`dj_cqrs.registry`."""

from __future__ import annotations

from typing import Any

from dj_cqrs.registry import Registry, master_registry, replica_registry


class _RegistryProxy(type):
    _registry: Registry

    @property
    def models(cls) -> dict[str, Any]:
        return cls._registry.models


class _RegistryFacade(metaclass=_RegistryProxy):
    _registry: Registry

    @classmethod
    def register_model(cls, model_cls: Any) -> None:
        cls._registry.register_model(model_cls)

    @classmethod
    def get_model_by_cqrs_id(cls, cqrs_id: str) -> Any | None:
        return cls._registry.get_model_by_cqrs_id(cqrs_id)


class MasterRegistry(_RegistryFacade):
    _registry = master_registry


class ReplicaRegistry(_RegistryFacade):
    _registry = replica_registry


__all__ = ["MasterRegistry", "ReplicaRegistry"]
