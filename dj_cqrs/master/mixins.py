"""Master models: ``MasterMixin`` (registered by its metaclass) and ``RawMasterMixin``."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import connections, models, router, transaction
from django.db.models.base import ModelBase
from django.db.models.deletion import Collector

from dj_cqrs.conf import cqrs_settings, resolve_callable
from dj_cqrs.constants import ALL_BASIC_FIELDS, SignalType
from dj_cqrs.master import dispatch, hooks, pending, serializers, signals, tracking, triggers
from dj_cqrs.master.managers import MasterManager
from dj_cqrs.master.outbox import inline, inline_delete, recording, store
from dj_cqrs.master.revision_bump import RevisionBump
from dj_cqrs.master.signals import SAVE_CONTEXT_ATTR
from dj_cqrs.registry import master_registry, not_installed_errors

_SAVE_ARG_NAMES = ("force_insert", "force_update", "using", "update_fields")


class RawMasterMixin(models.Model):
    """Master model base without a metaclass: call ``MasterMeta.register(Model)`` yourself."""

    CQRS_ID: ClassVar[str | None] = None
    CQRS_PRODUCE: ClassVar[bool] = True
    CQRS_FIELDS: ClassVar[Any] = ALL_BASIC_FIELDS
    CQRS_SERIALIZER: ClassVar[str | None] = None
    CQRS_TRACKED_FIELDS: ClassVar[Any] = None
    #: PostgreSQL: capture every write (QuerySet.update, raw SQL ...) with database triggers.
    CQRS_DB_TRIGGERS: ClassVar[bool] = False

    # Field definitions (help_text included) are exactly django-cqrs 3.1.0's as seen by the
    # migration autodetector: swapping packages must not produce a migration. The text is theirs.
    cqrs_revision = models.IntegerField(
        default=0,
        help_text="This field must be incremented on any model update. It's used to for CQRS sync.",
    )
    cqrs_updated = models.DateTimeField(
        auto_now=True,
        help_text="This field must be incremented on every model update. It's used to for CQRS sync.",
    )

    objects = models.Manager()
    cqrs = MasterManager()

    class Meta:
        abstract = True

    @classmethod
    def check(cls, **kwargs: Any) -> list[Any]:
        """Django's model checks, and ``dj_cqrs.E010`` when ``dj_cqrs`` is not installed (its own
        checks, registered by the app, would not run)."""
        return [*super().check(**kwargs), *not_installed_errors(cls)]

    # -- per-transaction save counting (django-cqrs helpers) -------------------------------------

    @property
    def cqrs_saves_count(self) -> int:
        """How many times this Python object was saved in the current transaction (0 again once
        that transaction has committed or rolled back)."""
        marker = self.__dict__.get("_cqrs_saves_transaction")
        if marker is not None:
            using, token = marker
            state = pending.current(using)
            if state is None or state.token != token:
                return 0
        return int(self.__dict__.get("_cqrs_saves_count", 0))

    @property
    def is_initial_cqrs_save(self) -> bool:
        return self.cqrs_saves_count < 2

    def reset_cqrs_saves_count(self) -> None:
        self.__dict__["_cqrs_saves_count"] = 0

    def _count_cqrs_save(self, using: str) -> None:
        if not connections[using].in_atomic_block:
            self.__dict__["_cqrs_saves_transaction"] = None
            self.__dict__["_cqrs_saves_count"] = 1
            return
        marker = (using, pending.ensure(using, dispatch.publish_committed).token)
        count = self.cqrs_saves_count if self.__dict__.get("_cqrs_saves_transaction") == marker else 0
        self.__dict__["_cqrs_saves_transaction"] = marker
        self.__dict__["_cqrs_saves_count"] = count + 1

    # -- persistence -----------------------------------------------------------------------------

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_cqrs_fields = kwargs.pop("update_cqrs_fields", None)
        for name, value in zip(_SAVE_ARG_NAMES, args, strict=False):
            kwargs[name] = value
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        kwargs["using"] = using
        update_fields = kwargs.get("update_fields")
        auto = (
            cqrs_settings.master.CQRS_AUTO_UPDATE_FIELDS
            if update_cqrs_fields is None
            else bool(update_cqrs_fields)
        )
        if update_fields is not None:
            update_fields = list(update_fields)
        publish = update_fields is None or auto or "cqrs_revision" in update_fields

        if publish and self.CQRS_PRODUCE:
            # Before anything is written: on PostgreSQL an autocommit save writes its row and its
            # outbox row in one statement, committed before post_save could fail
            dispatch.transport_resolves()
        autocommit = not connections[using].in_atomic_block
        self._count_cqrs_save(using)
        try:
            self._cqrs_save(using, kwargs, update_fields, publish)
        finally:
            if autocommit:
                self.reset_cqrs_saves_count()

    def _cqrs_save(
        self, using: str, kwargs: dict[str, Any], update_fields: list[str] | None, publish: bool
    ) -> None:
        if triggers.active(type(self), using):
            # The table's triggers bump the revision and write the outbox row in the statement
            # itself, so no transaction of our own is needed (an autocommit save stays one
            # round trip, as for a plain model).
            self.__dict__[SAVE_CONTEXT_ATTR] = {"publish": publish, "previous_data": None}
            try:
                super().save(**kwargs)
            finally:
                self.__dict__.pop(SAVE_CONTEXT_ATTR, None)
            # The stored revision is the trigger's: read it lazily on next access.
            self.__dict__.pop("cqrs_revision", None)
            return
        plan = inline.plan(self, using) if publish else None
        if plan is not None and not connections[using].in_atomic_block:
            # The statement that writes the row writes the outbox row too: no transaction needed.
            self._save_changes(using, kwargs, update_fields, publish, plan)
            return
        with transaction.atomic(using=using, savepoint=False):
            self._save_changes(using, kwargs, update_fields, publish, plan)

    def _save_changes(
        self,
        using: str,
        kwargs: dict[str, Any],
        update_fields: list[str] | None,
        publish: bool,
        plan: inline.InlineSave | None,
    ) -> None:
        adding = self._state.adding
        bumped = False
        if publish and not adding and self.pk is not None:
            known = pending.find(using, type(self).CQRS_ID, self.pk)  # type: ignore[arg-type]
            if known is None or known.revision is None:
                self.cqrs_revision = RevisionBump(type(self))  # type: ignore[assignment]
                bumped = True
            else:
                self.cqrs_revision = known.revision
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "cqrs_revision", "cqrs_updated"}
        if adding and publish:
            self._continue_revision_after_delete(using)
        captured = tracking.changes(self, created=adding)
        previous = tracking.remember(self, captured)
        context: dict[str, Any] = {"publish": publish, "previous_data": previous if publish else None}
        self.__dict__[SAVE_CONTEXT_ATTR] = context
        try:
            if plan is None:
                super().save(**kwargs)
            else:
                plan.prepare(context["previous_data"])
                context["inline"] = plan
                with plan.installed():
                    super().save(**kwargs)
        finally:
            self.__dict__.pop(SAVE_CONTEXT_ATTR, None)
        event = context.get("event")
        if captured is not None and event is not None and event.previous_data is not previous:
            # Merged with an earlier save of this row in the transaction: its message carries
            # the merged previous values, and so does get_tracked_fields_data().
            if not hooks.overrides(type(self), "get_tracked_fields_data"):
                self.__dict__[tracking.CAPTURED_ATTR] = event.previous_data
        if bumped and serializers.is_expression(self.__dict__.get("cqrs_revision")):
            # The outbox already read the new revision back in its INSERT; otherwise read it.
            self.__dict__["cqrs_revision"] = (
                type(self)._base_manager.using(using).filter(pk=self.pk).values_list("cqrs_revision", flat=True).get()
            )
            event = pending.find(using, type(self).CQRS_ID, self.pk)  # type: ignore[arg-type]
            if event is not None and event.signal is SignalType.SAVE:
                event.revision = self.__dict__["cqrs_revision"]
        tracking.reset(self)

    def _continue_revision_after_delete(self, using: str) -> None:
        """Revision of a new instance whose primary key the caller chose.

        If the row exists (Django then UPDATEs it), the save continues its revision instead of
        writing the instance's 0. If an object with this key was deleted earlier, the new one
        continues after the DELETE's revision, so replicas that remember the deletion accept it
        (see ``replica.tombstones``).
        """
        pk_field = type(self)._meta.pk
        if self.pk is None or pk_field.has_default():
            return
        stored = type(self)._base_manager.using(using).filter(pk=self.pk)
        if connections[using].features.has_select_for_update:
            stored = stored.select_for_update()
        current = stored.values_list("cqrs_revision", flat=True).first()
        if current is not None:
            self.cqrs_revision = current + 1
            return
        if not store.enabled():
            return
        last = recording.last_delete_revision(using, type(self).CQRS_ID, self.pk)  # type: ignore[arg-type]
        mine = self.__dict__.get("cqrs_revision")
        if last is not None and isinstance(mine, int) and mine <= last:
            self.cqrs_revision = last + 1

    def delete(self, using: str | None = None, keep_parents: bool = False) -> Any:
        using = using or router.db_for_write(type(self), instance=self)
        if self.CQRS_PRODUCE:  # before the (possibly one-statement, autocommit) delete
            dispatch.transport_resolves()
        collector = None
        plan = inline_delete.plan(self, using, signals.on_post_delete)
        if plan is not None:
            # Autocommit on PostgreSQL: when the collector finds nothing but this object, one
            # statement deletes it and writes its outbox row (no transaction needed).
            collector = Collector(using=using, origin=self)
            collector.collect([self], keep_parents=keep_parents)
            done = plan.run(collector)
            if done is not None:
                return done
        with transaction.atomic(using=using, savepoint=False):
            if self.pk is not None:
                # The DELETE carries the stored revision + 1, not a stale in-memory one.
                stored = (
                    type(self)._base_manager.using(using).filter(pk=self.pk).values_list("cqrs_revision", flat=True).first()
                )
                if stored is not None:
                    self.__dict__["cqrs_revision"] = stored
            if collector is not None:  # already collected (as Django does, outside the transaction)
                return collector.delete()
            return super().delete(using=using, keep_parents=keep_parents)

    # -- serialization ---------------------------------------------------------------------------

    def save_tracked_fields(self) -> None:
        """Kept for django-cqrs compatibility: tracking happens in ``save``."""

    @hooks.default_hook
    def get_tracked_fields_data(self) -> dict[str, Any] | None:
        """``previous_data`` of the last save: ``{field: previous value}`` of the tracked fields it
        changed (None before the first save, or without ``CQRS_TRACKED_FIELDS``)."""
        return tracking.captured(self)

    @hooks.default_hook
    def to_cqrs_dict(self, using: str | None = None, sync: bool = False) -> dict[str, Any]:
        """The ``instance_data`` of this object."""
        cls = serializers.serializer_class(type(self))
        if cls is None:
            serializers.refresh_expressions(self, using)
            return serializers.default_serialize(self)
        instance: Any = self
        if not (sync or self.__dict__.get(serializers.FRESH_ROW_ATTR)):
            db = using or router.db_for_read(type(self), instance=self)
            qs = type(self).relate_cqrs_serialization(type(self)._default_manager.using(db))
            instance = qs.get(pk=self.pk)
        return serializers.class_serialize(instance, cls)

    @hooks.default_hook
    def cqrs_sync(self, using: str | None = None, queue: str | None = None) -> bool:
        """Re-publish this object as a SYNC (to every replica, or only to ``queue``).

        Returns False when the object is unsaved, gone from the database or filtered out by
        ``is_sync_instance``/``CQRS_PRODUCE``. A failed publish raises ``PublishFailed``.
        """
        if self._state.adding or self.pk is None:
            return False
        db = using or router.db_for_read(type(self), instance=self)
        if serializers.serializer_class(type(self)) is None:
            try:
                self.refresh_from_db(using=db)
            except type(self).DoesNotExist:
                return False
        if not (type(self).CQRS_PRODUCE and self.is_sync_instance()):
            return False
        if hooks.overrides(type(self), "get_tracked_fields_data"):
            previous = self.get_tracked_fields_data()
        else:
            previous = {} if tracking.tracked_fields(type(self)) else None
        event = pending.PendingEvent(
            signal=SignalType.SYNC,
            model=type(self),
            pk=self.pk,
            using=router.db_for_write(type(self), instance=self) if using is None else using,
            instance=self,
            previous_data=previous,
            queue=queue,
        )
        # A sync is not tied to a transaction of this object: publish when the current one commits.
        dispatch.add(event)
        return True

    # -- hooks -----------------------------------------------------------------------------------

    @hooks.default_hook
    def is_sync_instance(self) -> bool:
        """Return False to send nothing for this object (its revision still increments)."""
        return True

    @hooks.default_hook
    def get_cqrs_meta(self, **kwargs: Any) -> dict[str, Any]:
        """The ``meta`` dict sent with each payload (``master.meta_function`` by default)."""
        func = resolve_callable(cqrs_settings.master.meta_function)
        if func is None:
            return {}
        return dict(func(obj=self, **kwargs) or {})

    @classmethod
    def relate_cqrs_serialization(cls, queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
        """Add ``select_related``/``prefetch_related`` for ``CQRS_SERIALIZER``."""
        return queryset

    def get_custom_cqrs_delete_data(self) -> dict[str, Any] | None:
        """Extra data sent as ``instance_data['custom']`` with a DELETE."""
        return None

    @classmethod
    def call_post_bulk_create(cls, instances: list[Any], using: str | None = None) -> None:
        signals.post_bulk_create.send(cls, instances=instances, using=using)

    @classmethod
    def call_post_update(cls, instances: list[Any], using: str | None = None, **kwargs: Any) -> None:
        signals.post_update.send(cls, instances=instances, using=using, **kwargs)


class MasterMeta(ModelBase):
    """Registers every concrete subclass of :class:`MasterMixin`."""

    def __new__(mcs, name: str, bases: tuple[type, ...], attrs: dict[str, Any], **kwargs: Any) -> Any:
        model: Any = super().__new__(mcs, name, bases, attrs, **kwargs)
        if not model._meta.abstract and name != "MasterMixin":
            MasterMeta.register(model)
        return model

    @staticmethod
    def register(model_cls: Any) -> Any:
        """Register a master model (use it directly with ``RawMasterMixin``)."""
        hooks.forget_cached(model_cls)
        serializers.forget_cached(model_cls)
        inline.forget_cached(model_cls)
        master_registry.register_model(model_cls)
        tracking.install(model_cls)
        signals.connect(model_cls)
        triggers.register(model_cls)
        return model_cls


class MasterMixin(RawMasterMixin, metaclass=MasterMeta):
    """Mix into the models this service owns; every committed change becomes a CQRS event."""

    class Meta:
        abstract = True
