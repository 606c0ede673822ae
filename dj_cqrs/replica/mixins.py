"""Replica models: ``ReplicaMixin`` (registered by its metaclass) and ``RawReplicaMixin``."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models
from django.db.models.base import ModelBase

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.registry import not_installed_errors, replica_registry
from dj_cqrs.replica.managers import ReplicaManager
from dj_cqrs.replica.retry import default_retry_delay, default_should_retry
from dj_cqrs.replica.values import assignable


class RawReplicaMixin:
    """Base for replicas that are not (only) database rows, e.g. event handlers.

    Implement the classmethods ``cqrs_save(master_data, previous_data=None, sync=False, meta=None)``
    and ``cqrs_delete(master_data, meta=None)``, then call ``ReplicaMeta.register(YourClass)``.
    ``meta`` is passed only when ``CQRS_META = True``.
    """

    # Migrations name this class in ``bases=`` by its module: use the django-cqrs import path
    # (re-exported there) so migrations are the same under both packages.
    __module__ = "dj_cqrs.mixins"

    CQRS_ID: ClassVar[str | None] = None
    CQRS_NO_DB_OPERATIONS: ClassVar[bool] = True
    CQRS_META: ClassVar[bool] = False
    CQRS_ONLY_DIRECT_SYNCS: ClassVar[bool] = False

    @classmethod
    def cqrs_save(cls, master_data: dict[str, Any], **kwargs: Any) -> Any:
        """Apply a SAVE (``previous_data=``, plus ``meta=`` with ``CQRS_META``) or a SYNC (also
        ``sync=True``); a falsy result is a failure. Subclasses implement it."""
        raise NotImplementedError(f"{cls.__name__}.cqrs_save must be implemented")

    @classmethod
    def cqrs_delete(cls, master_data: dict[str, Any], **kwargs: Any) -> Any:
        """Apply a DELETE (``meta=`` with ``CQRS_META``); a falsy result is a failure. Subclasses
        implement it."""
        raise NotImplementedError(f"{cls.__name__}.cqrs_delete must be implemented")

    @staticmethod
    def should_retry_cqrs(current_retry: int, exception: BaseException | None = None) -> bool:
        """Whether a failed message is retried (``replica.CQRS_MAX_RETRIES``; None = forever)."""
        return default_should_retry(current_retry)

    @staticmethod
    def get_cqrs_retry_delay(current_retry: int) -> float:
        """Seconds to wait before the next attempt: ``replica.CQRS_RETRY_DELAY``, multiplied by
        ``CQRS_RETRY_BACKOFF ** current_retry`` and capped at ``CQRS_RETRY_MAX_DELAY``; without a
        back-off, the configured value itself (an ``int`` stays an ``int``)."""
        delay = default_retry_delay(current_retry)
        configured: float = cqrs_settings.replica.CQRS_RETRY_DELAY
        return configured if delay == configured else delay


class ReplicaMeta(ModelBase):
    """Registers every concrete subclass of :class:`ReplicaMixin`."""

    def __new__(mcs, name: str, bases: tuple[type, ...], attrs: dict[str, Any], **kwargs: Any) -> Any:
        model: Any = super().__new__(mcs, name, bases, attrs, **kwargs)
        if not model._meta.abstract and name != "ReplicaMixin":
            ReplicaMeta.register(model)
        return model

    @staticmethod
    def register(model_cls: Any) -> Any:
        """Register a replica model or a ``RawReplicaMixin`` handler class."""
        replica_registry.register_model(model_cls)
        return model_cls


class ReplicaMixin(RawReplicaMixin, models.Model, metaclass=ReplicaMeta):
    """Mix into read-only copies of another service's models."""

    CQRS_MAPPING: ClassVar[dict[str, str] | None] = None
    CQRS_CUSTOM_SERIALIZATION: ClassVar[bool] = False
    CQRS_SELECT_FOR_UPDATE: ClassVar[bool] = False
    CQRS_NO_DB_OPERATIONS: ClassVar[bool] = False

    cqrs_revision = models.IntegerField()
    cqrs_updated = models.DateTimeField()

    objects = models.Manager()
    cqrs = ReplicaManager()

    class Meta:
        abstract = True

    @classmethod
    def check(cls, **kwargs: Any) -> list[Any]:
        """Django's model checks, and ``dj_cqrs.E010`` when ``dj_cqrs`` is not installed."""
        return [*super().check(**kwargs), *not_installed_errors(cls)]

    @classmethod
    def cqrs_save(  # type: ignore[override]
        cls,
        master_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Apply a SAVE/SYNC. Keeps the revision rules; override ``cqrs_create``/``cqrs_update``
        instead of this method. With ``CQRS_NO_DB_OPERATIONS`` it must be implemented."""
        if cls.CQRS_NO_DB_OPERATIONS:
            return super().cqrs_save(master_data, previous_data=previous_data, sync=sync, meta=meta)
        return cls.cqrs.save_instance(master_data, previous_data, sync, meta)

    @classmethod
    def cqrs_create(
        cls,
        sync: bool,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Create the row from ``mapped_data`` (the master's keys, ``CQRS_MAPPING`` applied):
        ``_default_manager.create`` with foreign keys assigned by id."""
        return cls._default_manager.create(**assignable(cls, mapped_data))

    def cqrs_update(
        self,
        sync: bool,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Update this row with ``mapped_data`` (every key set, foreign keys by id, then a full
        save)."""
        for key, value in assignable(type(self), mapped_data).items():
            setattr(self, key, value)
        self.save()
        return self

    @classmethod
    def cqrs_delete(cls, master_data: dict[str, Any], meta: dict[str, Any] | None = None) -> bool:  # type: ignore[override]
        """Delete the row named by ``master_data['id']``. With ``CQRS_NO_DB_OPERATIONS`` it must be
        implemented."""
        if cls.CQRS_NO_DB_OPERATIONS:
            return super().cqrs_delete(master_data, meta=meta)  # type: ignore[no-any-return]
        return cls.cqrs.delete_instance(master_data)  # type: ignore[no-any-return]
