"""``Model.cqrs`` on replica models: map master data and apply it with the revision rules."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import Error as DatabaseError
from django.db import InterfaceError, OperationalError, connections, models, router, transaction

from dj_cqrs.core.reasons import Reason, Status
from dj_cqrs.replica import context, tombstones
from dj_cqrs.replica.locks import lock_objects
from dj_cqrs.replica.rules import (
    delete_is_stale,
    delete_pk,
    log_ignored_deleted,
    log_stale_delete,
    mapped_pk,
    parse_updated,
    revision_decision,
    tombstone_allows,
)
from dj_cqrs.replica.values import field_names, required_fields

logger = logging.getLogger("django-cqrs.replica")


class ReplicaManager(models.Manager):  # type: ignore[type-arg]
    """The ``cqrs`` manager of replica models."""

    # -- entry points ----------------------------------------------------------------------------

    def save_instance(
        self,
        master_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Create or update the replica row from ``master_data``; falsy on failure."""
        mapped = self._map_save_data(master_data)
        if mapped is None:
            return None
        db = self._write_db()
        outermost = not connections[db].in_atomic_block
        # Its own transaction when called outside one (``Model.cqrs_save(data)`` from user code):
        # the lock and the row lock below need one.
        with transaction.atomic(using=db, savepoint=False):
            result = self._save_locked(mapped, previous_data, sync, meta, db)
            if not result and outermost:
                # A create/update error was caught (logged, falsy result): nothing is committed.
                transaction.set_rollback(True, using=db)
            return result

    def _save_locked(
        self, mapped: dict[str, Any], previous_data: dict[str, Any] | None, sync: bool, meta: dict[str, Any] | None, db: str
    ) -> Any:
        model = self.model
        # The canonical key (a UUID in any spelling is one object, and one tombstone).
        try:
            pk = mapped_pk(model, mapped)
        except ValidationError:
            # the lookup below fails with the database field's own error, as it always did
            pk = mapped.get(model._meta.pk.attname, mapped.get(model._meta.pk.name))
        lock_objects(model, [pk], db)
        qs = model._base_manager.using(db)
        if connections[db].features.has_select_for_update or getattr(model, "CQRS_SELECT_FOR_UPDATE", False):
            # Always lock the row we compare revisions with: two workers applying revisions of
            # the same object must not both read the old revision and commit out of order.
            qs = qs.select_for_update()
        instance = qs.filter(pk=pk).first()
        mapped_previous = self._map_previous_data(previous_data)
        if instance is None:
            if not self._tombstone_allows(pk, mapped, sync):
                return True
            return self.create_instance(mapped, mapped_previous, sync=sync, meta=meta)
        return self.update_instance(instance, mapped, mapped_previous, sync=sync, meta=meta)

    def create_instance(
        self,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        model = self.model
        kwargs: dict[str, Any] = {"previous_data": previous_data}
        if getattr(model, "CQRS_META", False):
            kwargs["meta"] = meta
        try:
            return model.cqrs_create(sync, mapped_data, **kwargs)
        except (DatabaseError, ValidationError) as exc:
            _caught(model, "create", mapped_data, exc)
            return None

    def update_instance(
        self,
        instance: Any,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        model = self.model
        status = revision_decision(
            model, instance.pk, mapped_data["cqrs_revision"], mapped_data.get("cqrs_updated"),
            instance.cqrs_revision, instance.cqrs_updated, sync,
        )
        if status is not Status.APPLIED:
            context.current().status = status
            return instance
        kwargs: dict[str, Any] = {"previous_data": previous_data}
        if getattr(model, "CQRS_META", False):
            kwargs["meta"] = meta
        try:
            return instance.cqrs_update(sync, mapped_data, **kwargs)
        except (DatabaseError, ValidationError) as exc:
            _caught(model, "update", mapped_data, exc)
            return None

    def _tombstone_allows(self, pk: Any, mapped: dict[str, Any], sync: bool) -> bool:
        """False (and logged) when ``pk`` was deleted after the state this SAVE carries."""
        if sync and context.current().direct_sync:
            tombstones.clear(self.model, [pk])
            return True
        found = tombstones.find(self.model, [pk]).get(tombstones.pk_key(pk))
        if found is None:
            return True
        if tombstone_allows(found, mapped["cqrs_revision"], mapped.get("cqrs_updated")):
            tombstones.clear(self.model, [pk])
            return True
        log_ignored_deleted(self.model, pk, mapped["cqrs_revision"], found.revision)
        context.current().status = Status.IGNORED_DELETED
        return False

    def delete_instance(self, master_data: dict[str, Any]) -> bool:
        """Delete the row named by ``master_data['id']`` (the key is ``id`` whatever the PK is)
        and remember the deletion (a tombstone), unless the stored row is newer than the DELETE."""

        pk, reason = delete_pk(self.model, master_data)
        if reason is not None:
            context.current().reason = reason
            return False
        try:
            with transaction.atomic(using=self._write_db(), savepoint=False):
                return self._delete_locked(pk, master_data)
        except DatabaseError as exc:  # e.g. a ProtectedError: logged, False (the message fails)
            _caught(self.model, "delete", {self.model._meta.pk.name: pk, **master_data}, exc)
            return False

    def _delete_locked(self, pk: Any, master_data: dict[str, Any]) -> bool:
        lock_objects(self.model, [pk], self._write_db())
        qs = self.model._base_manager.using(self._write_db()).filter(pk=pk)
        revision = master_data.get("cqrs_revision")
        deleted_at = parse_updated(master_data.get("cqrs_updated"))
        locked = qs.select_for_update() if connections[self._write_db()].features.has_select_for_update else qs
        # Locked: a concurrent worker applying a newer SAVE of this object commits first, and
        # the comparison below sees its revision.
        stored = locked.values_list("cqrs_revision", "cqrs_updated").first()
        if stored is not None and delete_is_stale(stored[0], stored[1], revision, deleted_at):
            log_stale_delete(self.model, pk, revision, stored[0])
            context.current().status = Status.IGNORED_STALE_DELETE
            return True
        qs.delete()
        tombstones.record(self.model, pk, master_data.get("cqrs_revision"), master_data.get("cqrs_updated"))
        return True

    # -- mapping ---------------------------------------------------------------------------------

    def _map_previous_data(self, previous_data: dict[str, Any] | None) -> dict[str, Any] | None:
        """``previous_data`` as ``cqrs_create``/``cqrs_update`` get it: None when empty, keys
        renamed (and only fields kept) by ``CQRS_MAPPING``."""
        if not previous_data:
            return None
        mapping = getattr(self.model, "CQRS_MAPPING", None)
        if mapping is None:
            return previous_data
        names = field_names(self.model)
        mapped = ((mapping[k], v) for k, v in previous_data.items() if k in mapping)
        return {k: v for k, v in mapped if k in names}

    def _map_save_data(self, master_data: dict[str, Any]) -> dict[str, Any] | None:
        """The data ``cqrs_create``/``cqrs_update`` get: the master's keys (renamed by
        ``CQRS_MAPPING``), checked, values as received (:func:`assignable` converts them)."""
        if not self._cqrs_fields_are_filled(master_data):
            return None
        mapped = self._make_initial_mapping(master_data)
        if mapped is None:
            return None
        # the key first, as django-cqrs checks it: a row without one is "missing_pk", whatever else
        pk_field = self.model._meta.pk
        if pk_field.name not in mapped and pk_field.attname not in mapped:  # an FK key is under its attname
            self._log_pk_data_error()
            return None
        if not getattr(self.model, "CQRS_CUSTOM_SERIALIZATION", False):
            mapped = self._remove_excessive_data(mapped)
            missing = self._missing_required_fields(mapped)
            if missing:
                # django-cqrs's text, then the fields: a replica field the master never sends
                # (an extra NOT NULL column) fails every message, and the name says which
                logger.error(
                    "Not all required CQRS fields are provided in data (%s). Missing: %s.",
                    self.model.CQRS_ID,
                    ", ".join(missing),
                )
                report = context.current()
                report.reason = Reason.MISSING_REQUIRED_FIELDS
                report.detail = f"required field(s) missing: {', '.join(missing)}"
                return None
        return mapped

    def _make_initial_mapping(self, master_data: dict[str, Any]) -> dict[str, Any] | None:
        mapping = getattr(self.model, "CQRS_MAPPING", None)
        if mapping is None:
            return dict(master_data)
        mapped: dict[str, Any] = {}
        for master_key, replica_key in mapping.items():
            if master_key not in master_data:
                logger.error(
                    "Bad master-replica mapping for %s (%s).", master_key, self.model.CQRS_ID
                )
                context.current().reason = Reason.BAD_MAPPING
                return None
            mapped[replica_key] = master_data[master_key]
        mapped["cqrs_revision"] = master_data["cqrs_revision"]
        mapped["cqrs_updated"] = master_data["cqrs_updated"]
        return mapped

    def _remove_excessive_data(self, data: dict[str, Any]) -> dict[str, Any]:
        names = field_names(self.model)
        return {k: v for k, v in data.items() if k in names}

    def _all_required_fields_are_filled(self, mapped_data: dict[str, Any]) -> bool:
        return not self._missing_required_fields(mapped_data)

    def _missing_required_fields(self, mapped_data: dict[str, Any]) -> list[str]:
        """The NOT NULL fields of the replica model that ``mapped_data`` does not fill."""
        return [
            name
            for name, attname in required_fields(self.model)
            if name not in mapped_data and attname not in mapped_data
        ]

    def _cqrs_fields_are_filled(self, data: dict[str, Any]) -> bool:
        revision = data.get("cqrs_revision")
        if "cqrs_updated" in data and isinstance(revision, int) and not isinstance(revision, bool):
            return True
        logger.error("CQRS sync fields are not provided in data (%s).", self.model.CQRS_ID)
        context.current().reason = Reason.MISSING_CQRS_FIELDS
        return False

    def _log_pk_data_error(self) -> None:
        logger.error("CQRS PK is not provided in data (%s).", self.model.CQRS_ID)
        context.current().reason = Reason.MISSING_PK

    def _write_db(self) -> str:
        """The database replica writes go to (the apply transaction's), not a read replica."""
        return self._db or router.db_for_write(self.model)

    def _get_model_pk_name(self) -> str:
        return self.model._meta.pk.name  # type: ignore[no-any-return]


def _caught(model: Any, action: str, data: dict[str, Any], exc: BaseException) -> None:
    """A database or validation error of a create/update/delete: logged and recorded for the
    consumer (which retries the message); the caller returns a falsy value, as django-cqrs does.
    A lost connection is raised: the consumer keeps the message until the database is back."""
    logger.error(
        "CQRS %s error: pk = %s, cqrs_revision = %s (%s): %s",
        action,
        data.get(model._meta.pk.name, data.get("id")),
        data.get("cqrs_revision"),
        model.CQRS_ID,
        exc,
    )
    context.current().exception = exc
    if isinstance(exc, DatabaseError) and _is_connection_error(exc):
        raise exc


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (InterfaceError, OperationalError))
