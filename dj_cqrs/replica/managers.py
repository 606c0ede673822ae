"""``Model.cqrs`` on replica models: map master data and apply it with the revision rules."""

from __future__ import annotations

import datetime
import decimal
import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import Error as DatabaseError
from django.db import connections, models, router, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from dj_cqrs.encoding import ExactFloat
from dj_cqrs.replica.locks import lock_objects

logger = logging.getLogger("django-cqrs.replica")


class ApplyFailure(Exception):
    """Raised inside the apply transaction to roll it back when a handler reports failure."""


def last_error_holder() -> dict[str, Any]:
    from dj_cqrs.replica import context

    return context.current()


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
        if status != "apply":
            last_error_holder()["status"] = status
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
        from dj_cqrs.replica import context, tombstones

        if sync and context.current().get("direct_sync"):
            tombstones.clear(self.model, [pk])
            return True
        found = tombstones.find(self.model, [pk]).get(tombstones.pk_key(pk))
        if found is None:
            return True
        if tombstones.allows(found, mapped["cqrs_revision"], mapped.get("cqrs_updated")):
            tombstones.clear(self.model, [pk])
            return True
        log_ignored_deleted(self.model, pk, mapped["cqrs_revision"], found.revision)
        context.current()["status"] = "ignored_deleted"
        return False

    def delete_instance(self, master_data: dict[str, Any]) -> bool:
        """Delete the row named by ``master_data['id']`` (the key is ``id`` whatever the PK is)
        and remember the deletion (a tombstone), unless the stored row is newer than the DELETE."""

        pk, reason = delete_pk(self.model, master_data)
        if reason is not None:
            last_error_holder()["reason"] = reason
            return False
        try:
            with transaction.atomic(using=self._write_db(), savepoint=False):
                return self._delete_locked(pk, master_data)
        except DatabaseError as exc:  # e.g. a ProtectedError: logged, False (the message fails)
            _caught(self.model, "delete", {self.model._meta.pk.name: pk, **master_data}, exc)
            return False

    def _delete_locked(self, pk: Any, master_data: dict[str, Any]) -> bool:
        from dj_cqrs.replica import context, tombstones

        lock_objects(self.model, [pk], self._write_db())
        qs = self.model._base_manager.using(self._write_db()).filter(pk=pk)
        revision = master_data.get("cqrs_revision")
        deleted_at = tombstones.parse_updated(master_data.get("cqrs_updated"))
        locked = qs.select_for_update() if connections[self._write_db()].features.has_select_for_update else qs
        # Locked: a concurrent worker applying a newer SAVE of this object commits first, and
        # the comparison below sees its revision.
        stored = locked.values_list("cqrs_revision", "cqrs_updated").first()
        if stored is not None and tombstones.delete_is_stale(stored[0], stored[1], revision, deleted_at):
            log_stale_delete(self.model, pk, revision, stored[0])
            context.current()["status"] = "ignored_stale_delete"
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
            if not self._all_required_fields_are_filled(mapped):
                logger.error(
                    "Not all required CQRS fields are provided in data (%s).", self.model.CQRS_ID
                )
                last_error_holder()["reason"] = "missing_required_fields"
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
                last_error_holder()["reason"] = "bad_mapping"
                return None
            mapped[replica_key] = master_data[master_key]
        mapped["cqrs_revision"] = master_data["cqrs_revision"]
        mapped["cqrs_updated"] = master_data["cqrs_updated"]
        return mapped

    def _remove_excessive_data(self, data: dict[str, Any]) -> dict[str, Any]:
        names = field_names(self.model)
        return {k: v for k, v in data.items() if k in names}

    def _all_required_fields_are_filled(self, mapped_data: dict[str, Any]) -> bool:
        for name, attname in required_fields(self.model):
            if name not in mapped_data and attname not in mapped_data:
                return False
        return True

    def _cqrs_fields_are_filled(self, data: dict[str, Any]) -> bool:
        revision = data.get("cqrs_revision")
        if "cqrs_updated" in data and isinstance(revision, int) and not isinstance(revision, bool):
            return True
        logger.error("CQRS sync fields are not provided in data (%s).", self.model.CQRS_ID)
        last_error_holder()["reason"] = "missing_cqrs_fields"
        return False

    def _log_pk_data_error(self) -> None:
        logger.error("CQRS PK is not provided in data (%s).", self.model.CQRS_ID)
        last_error_holder()["reason"] = "missing_pk"

    def _write_db(self) -> str:
        """The database replica writes go to (the apply transaction's), not a read replica."""
        return self._db or router.db_for_write(self.model)

    def _get_model_pk_name(self) -> str:
        return self.model._meta.pk.name  # type: ignore[no-any-return]


def is_newer(incoming: Any, stored: Any) -> bool:
    """Whether the ``cqrs_updated`` of a message is strictly later than the stored one.

    False when either is missing or unparsable: an equal revision is then a duplicate.
    """
    if isinstance(incoming, str):
        try:
            incoming = parse_datetime(incoming)
        except ValueError:
            return False
    if not isinstance(incoming, datetime.datetime) or not isinstance(stored, datetime.datetime):
        return False
    if timezone.is_naive(incoming) != timezone.is_naive(stored):
        # A naive value (USE_TZ=False on one side) is taken as UTC, as django-cqrs writes it.
        if timezone.is_naive(incoming):
            incoming = incoming.replace(tzinfo=datetime.timezone.utc)
        else:
            stored = stored.replace(tzinfo=datetime.timezone.utc)
    return bool(incoming > stored)


def revision_decision(
    model: Any, pk: Any, incoming: int, incoming_updated: Any, current: int, current_updated: Any, sync: bool
) -> str:
    """The revision rule for a SAVE/SYNC of a stored row: ``"apply"``, ``"ignored_stale"`` or
    ``"ignored_duplicate"``, logged as django-cqrs logs it.

    Without ``sync``: a lower revision is stale, an equal one a duplicate (unless its
    ``cqrs_updated`` is later), a gap is applied (and logged). A sync always applies.
    """
    cqrs_id = model.CQRS_ID
    if sync:
        if incoming < current:
            logger.warning(
                "CQRS revision downgrade on sync: pk = %s, cqrs_revision = new %s / existing %s (%s).",
                pk, incoming, current, cqrs_id,
            )
        return "apply"
    if incoming < current:
        logger.error(
            "Wrong CQRS sync order: pk = %s, cqrs_revision = new %s / existing %s (%s).", pk, incoming, current, cqrs_id
        )
        return "ignored_stale"
    if incoming == current:
        if is_newer(incoming_updated, current_updated):
            # django-cqrs masters send two messages with the same revision when two Python
            # objects of one row are saved in one transaction: the first carries the first
            # object's (stale) state, the second the final one, with a later cqrs_updated.
            logger.warning(
                "Same CQRS revision with a newer cqrs_updated, applied: pk = %s, cqrs_revision = %s (%s).",
                pk, current, cqrs_id,
            )
            return "apply"
        logger.warning("Received duplicate CQRS data: pk = %s, cqrs_revision = %s (%s).", pk, current, cqrs_id)
        if current == 0:
            logger.warning("CQRS potential creation race condition: pk = %s (%s).", pk, cqrs_id)
        return "ignored_duplicate"
    if incoming != current + 1:
        logger.warning(
            "Lost or filtered out %s CQRS packages: pk = %s, cqrs_revision = %s (%s)",
            incoming - current - 1, pk, incoming, cqrs_id,
        )
    return "apply"


def delete_pk(model: Any, master_data: dict[str, Any]) -> tuple[Any, str | None]:
    """The key a DELETE names (``id``, whatever the primary key is called), or a failure reason
    (``missing_pk``/``bad_pk``/``missing_cqrs_fields``, logged)."""
    raw = master_data.get("id")
    if raw is None:
        logger.error("CQRS PK is not provided in data (%s).", model.CQRS_ID)
        return None, "missing_pk"
    if "cqrs_revision" not in master_data or "cqrs_updated" not in master_data:
        logger.error("CQRS sync fields are not provided in data (%s).", model.CQRS_ID)
        return None, "missing_cqrs_fields"
    try:
        return model._meta.pk.to_python(raw), None
    except ValidationError:
        logger.error("CQRS PK is not valid for %s: %r", model.CQRS_ID, raw)
        return None, "bad_pk"


def mapped_pk(model: Any, mapped: dict[str, Any]) -> Any:
    """The canonical key of a mapped row (a foreign-key key is under its attname); raises
    ``ValidationError`` when it does not convert."""
    field = model._meta.pk
    return field.to_python(mapped.get(field.attname, mapped.get(field.name)))


def log_ignored_deleted(model: Any, pk: Any, revision: Any, deleted_revision: Any) -> None:
    logger.warning(
        "CQRS object was deleted: pk = %s, cqrs_revision = %s ignored, deleted at revision %s (%s).",
        pk, revision, deleted_revision, model.CQRS_ID,
    )


def log_stale_delete(model: Any, pk: Any, revision: Any, stored_revision: Any) -> None:
    logger.warning(
        "CQRS delete is older than the stored row (a re-created object): pk = %s,"
        " cqrs_revision = %s / existing %s ignored (%s).",
        pk, revision, stored_revision, model.CQRS_ID,
    )


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


def convert_values(model: type[models.Model], data: dict[str, Any]) -> dict[str, Any]:
    """Make master values assignable: FK ids under ``attname``, exact decimals, parsed binaries."""
    special = _special_fields(model)
    result = dict(data)
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
    last_error_holder()["exception"] = exc
    if isinstance(exc, DatabaseError) and _is_connection_error(exc):
        raise exc


def _is_connection_error(exc: BaseException) -> bool:
    from django.db import InterfaceError, OperationalError

    return isinstance(exc, (InterfaceError, OperationalError))
