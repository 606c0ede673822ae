"""What replica hooks receive and return, as django-cqrs 3.1.0 hands it to them (issue 10).

* ``cqrs_create``/``cqrs_update`` overrides get the master's keys (``publisher``, not
  ``publisher_id``); the defaults assign a foreign key by id;
* ``cqrs_save`` gets ``sync=`` only for a SYNC; ``meta=`` only with ``CQRS_META``;
* database and validation errors of the default hooks are logged and falsy (the message is retried);
* ``consume()`` works on copies and returns None for a bad signal type or a database error.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any
from unittest import mock

import pytest
from django.db import IntegrityError, OperationalError
from django.db.models import QuerySet

from dj_cqrs.controller.consumer import consume, route_signal_to_replica_model
from dj_cqrs.core.messages import Action
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.metas import ReplicaMeta
from dj_cqrs.mixins import RawReplicaMixin
from tests.apps.replica_app.models import BasicFieldsModelRef, FKModelRef, SimplestModelRef
from tests.unit.conftest import cqrs_settings_and_transport
from tests.unit.replica.helpers import UPDATED, row, send

pytestmark = pytest.mark.django_db(transaction=True)

SEEN: list[dict[str, Any]] = []


@functools.cache
def override_model() -> Any:
    """A replica (proxy of ``FKModelRef``) whose hooks read ``mapped_data["publisher"]``."""

    class FKOverrideRef(FKModelRef):
        CQRS_ID = "fk_override"

        class Meta:
            proxy = True
            app_label = "replica_app"

        @classmethod
        def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
            SEEN.append({"hook": "create", "keys": sorted(mapped_data), "previous": previous_data, "sync": sync})
            return cls.objects.create(
                id=mapped_data["id"],
                name=mapped_data["name"],
                publisher_id=mapped_data["publisher"],
                cqrs_revision=mapped_data["cqrs_revision"],
                cqrs_updated=mapped_data["cqrs_updated"],
            )

        def cqrs_update(self, sync, mapped_data, previous_data=None, meta=None):
            SEEN.append({"hook": "update", "keys": sorted(mapped_data), "previous": previous_data, "sync": sync})
            self.publisher_id = mapped_data["publisher"]
            self.cqrs_revision = mapped_data["cqrs_revision"]
            self.save()
            return self

    return FKOverrideRef


@functools.cache
def no_db_model() -> Any:
    class NoDbSimplestRef(SimplestModelRef):
        CQRS_ID = "no_db_simplest"
        CQRS_NO_DB_OPERATIONS = True

        class Meta:
            proxy = True
            app_label = "replica_app"

    return NoDbSimplestRef


class KwargsHandler(RawReplicaMixin):
    CQRS_ID = "kwargs_handler"

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, **kwargs):
        SEEN.append({"hook": "save", "previous": previous_data, "kwargs": sorted(kwargs)})
        return True

    @classmethod
    def cqrs_delete(cls, master_data, **kwargs):
        SEEN.append({"hook": "delete", "kwargs": sorted(kwargs)})
        return True


class MetaKwargsHandler(KwargsHandler):
    CQRS_ID = "meta_kwargs_handler"
    CQRS_META = True


class WithoutSyncHandler(RawReplicaMixin):
    """Written for django-cqrs's SAVE call: no ``sync`` argument, no ``**kwargs``."""

    CQRS_ID = "without_sync_handler"

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None):
        SEEN.append({"hook": "save", "previous": previous_data})
        return True

    @classmethod
    def cqrs_delete(cls, master_data):
        SEEN.append({"hook": "delete"})
        return True


class MutatingHandler(RawReplicaMixin):
    CQRS_ID = "mutating_handler"
    CQRS_NO_DB_OPERATIONS = False

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, **kwargs):
        master_data.clear()
        master_data["changed"] = True
        if previous_data is not None:
            previous_data["changed"] = True
        return None  # a failure: the message is retried with its original body


class DbErrorHandler(RawReplicaMixin):
    CQRS_ID = "db_error_handler"
    CQRS_NO_DB_OPERATIONS = False

    @classmethod
    def cqrs_save(cls, master_data, **kwargs):
        raise IntegrityError("duplicate key")


@pytest.fixture
def registered(isolated_registries):
    SEEN.clear()
    for cls in (override_model(), no_db_model(), KwargsHandler, MetaKwargsHandler, WithoutSyncHandler, MutatingHandler, DbErrorHandler):
        ReplicaMeta.register(cls)
    yield
    SEEN.clear()


def fk_row(pk: int, revision: int, publisher: Any, **fields: Any) -> dict[str, Any]:
    return row(pk, revision, name="n", publisher=publisher, **fields)


def test_overrides_get_the_master_keys_and_previous_data_as_django_cqrs(transport, registered):
    outcomes = [
        send(transport, "SAVE", fk_row(1, 0, 5), "fk_override", previous_data={}),
        send(transport, "SAVE", fk_row(1, 1, 6), "fk_override", previous_data={"publisher": 5, "extra": 1}),
        send(transport, "SYNC", fk_row(1, 1, 7), "fk_override"),
    ]
    assert [o.action for o in outcomes] == [Action.ACK] * 3
    keys = ["cqrs_revision", "cqrs_updated", "id", "name", "publisher"]
    assert SEEN == [
        {"hook": "create", "keys": keys, "previous": None, "sync": False},
        {"hook": "update", "keys": keys, "previous": {"publisher": 5, "extra": 1}, "sync": False},
        {"hook": "update", "keys": keys, "previous": None, "sync": True},
    ]
    assert FKModelRef.objects.get(pk=1).publisher_id == 7


@pytest.mark.parametrize("batch_apply", [True, False])
def test_default_hooks_assign_a_foreign_key_by_id(batch_apply):
    with cqrs_settings_and_transport(replica={"CQRS_BATCH_APPLY": batch_apply}) as transport:
        assert send(transport, "SAVE", fk_row(1, 0, 5), "fk_model").action is Action.ACK
        assert send(transport, "SAVE", fk_row(1, 1, 6), "fk_model").action is Action.ACK
    assert FKModelRef.objects.get(pk=1).publisher_id == 6
    assert FKModelRef.cqrs_save(fk_row(2, 0, 9)).publisher_id == 9


def test_handlers_get_the_keyword_arguments_django_cqrs_passes(transport, registered):
    delete = {"id": 1, "cqrs_revision": 1, "cqrs_updated": UPDATED}
    for cqrs_id in ("kwargs_handler", "meta_kwargs_handler", "without_sync_handler"):
        send(transport, "SAVE", row(1, 0), cqrs_id, previous_data={"a": 1}, meta={"m": 1})
        send(transport, "DELETE", delete, cqrs_id, meta={"m": 2})
    assert SEEN == [
        {"hook": "save", "previous": {"a": 1}, "kwargs": []},
        {"hook": "delete", "kwargs": []},
        {"hook": "save", "previous": {"a": 1}, "kwargs": ["meta"]},
        {"hook": "delete", "kwargs": ["meta"]},
        {"hook": "save", "previous": {"a": 1}},
        {"hook": "delete"},
    ]
    SEEN.clear()
    send(transport, "SYNC", row(1, 0), "kwargs_handler")
    send(transport, "SYNC", row(1, 0), "meta_kwargs_handler", meta={"m": 3})
    assert SEEN == [
        {"hook": "save", "previous": None, "kwargs": ["sync"]},
        {"hook": "save", "previous": None, "kwargs": ["meta", "sync"]},
    ]
    assert all(o.action is Action.ACK for o in transport.outcomes)
    # A handler without ``sync`` cannot take a SYNC, as with django-cqrs: the message fails.
    with cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": 0}) as failing:
        outcome = send(failing, "SYNC", row(1, 0), "without_sync_handler")
    assert (outcome.action, outcome.failure) == (Action.DEAD_LETTER, "exception")
    assert "TypeError" in outcome.detail


@pytest.mark.parametrize(
    ("cqrs_id", "data", "error"),
    [
        ("fk_model", {"name": None}, "IntegrityError"),
        ("basic", {"date_field": "not a date"}, "ValidationError"),
    ],
)
def test_default_update_errors_are_logged_falsy_and_retried(caplog, cqrs_id, data, error):
    pk = "int_field" if cqrs_id == "basic" else "id"
    first = {pk: 1, "name": "n", "cqrs_revision": 0, "cqrs_updated": UPDATED}
    if cqrs_id == "basic":
        first.pop("name")
    with cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": 1, "CQRS_RETRY_DELAY": 0}) as transport:
        assert send(transport, "SAVE", first, cqrs_id).action is Action.ACK
        bad = {**first, **data, "cqrs_revision": 1}
        with caplog.at_level(logging.ERROR, logger="django-cqrs"):
            outcome = send(transport, "SAVE", bad, cqrs_id)
            model = FKModelRef if cqrs_id == "fk_model" else BasicFieldsModelRef
            assert model.cqrs_save(bad) is None
    assert (outcome.action, outcome.reason) == (Action.RETRY, "exception")
    assert error in outcome.detail
    assert "CQRS update error: pk = 1, cqrs_revision = 1" in caplog.text
    assert model._default_manager.get(pk=1).cqrs_revision == 0


def test_default_delete_database_error_is_logged_false_and_retried(caplog):
    SimplestModelRef.objects.create(id=1, name="n", cqrs_revision=0, cqrs_updated=UPDATED)
    delete = {"id": 1, "cqrs_revision": 1, "cqrs_updated": UPDATED}
    with cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": 1, "CQRS_RETRY_DELAY": 0}) as transport:
        with mock.patch.object(QuerySet, "delete", side_effect=IntegrityError("still referenced")):
            with caplog.at_level(logging.ERROR, logger="django-cqrs"):
                assert SimplestModelRef.cqrs_delete(dict(delete)) is False
                outcome = send(transport, "DELETE", dict(delete))
        assert (outcome.action, outcome.reason) == (Action.RETRY, "exception")
        assert "CQRS delete error: pk = 1, cqrs_revision = 1 (simplest): still referenced" in caplog.text
        assert SimplestModelRef.objects.filter(pk=1).exists()
        lost = OperationalError("server closed the connection unexpectedly")
        with mock.patch.object(QuerySet, "delete", side_effect=lost), pytest.raises(OperationalError):
            SimplestModelRef.cqrs_delete(dict(delete))


@pytest.mark.parametrize("batch_apply", [True, False])
def test_delete_without_cqrs_fields_fails_and_deletes_nothing(batch_apply):
    SimplestModelRef.objects.create(id=1, name="n", cqrs_revision=0, cqrs_updated=UPDATED)
    assert SimplestModelRef.cqrs_delete({"id": 1}) is False
    assert SimplestModelRef.cqrs_delete({"id": 1, "cqrs_revision": 1}) is False
    with cqrs_settings_and_transport(replica={"CQRS_BATCH_APPLY": batch_apply}) as transport:
        outcome = send(transport, "DELETE", {"id": 1, "cqrs_updated": UPDATED})
    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "missing_cqrs_fields")
    assert SimplestModelRef.objects.filter(pk=1).exists()


def test_no_db_operations_default_hooks_raise_not_implemented(registered):
    model = no_db_model()
    with pytest.raises(NotImplementedError):
        model.cqrs_save(row(1, 0))
    with pytest.raises(NotImplementedError):
        model.cqrs_delete({"id": 1, "cqrs_revision": 1, "cqrs_updated": UPDATED})
    with pytest.raises(NotImplementedError):
        consume(TransportPayload("SAVE", "no_db_simplest", row(1, 0), 1))
    assert not SimplestModelRef.objects.exists()


def test_consume_returns_none_for_a_bad_signal_type_or_a_database_error(caplog, registered):
    with caplog.at_level(logging.ERROR, logger="django-cqrs"):
        assert route_signal_to_replica_model("UPSERT", "simplest", row(1, 0)) is None
        assert consume(TransportPayload("SAVE", "db_error_handler", row(1, 0), 1)) is None
    assert 'Bad signal type "UPSERT" for CQRS_ID "simplest".' in caplog.text
    assert "CQRS SAVE error: pk = 1, cqrs_revision = 0 (db_error_handler): duplicate key" in caplog.text
    with pytest.raises(ValueError):
        TransportPayload("UPSERT", "simplest", row(1, 0), 1)


def test_handlers_change_copies_never_the_payload(transport, registered):
    data, previous, meta = {"id": 1, "nested": {"a": [1]}}, {"nested": {"b": 2}}, {"m": {"c": 3}}
    payload = TransportPayload("SAVE", "mutating_handler", data, 1, previous_data=previous, meta=meta)
    before = copy.deepcopy((data, previous, meta))
    assert consume(payload) is None
    assert (payload.instance_data, payload.previous_data, payload.meta) == before
    outcome = send(transport, "SAVE", copy.deepcopy(data), "mutating_handler", previous_data=copy.deepcopy(previous))
    assert outcome.action is Action.RETRY
    # the payload a retry re-publishes is the one received
    assert (outcome.payload.instance_data, outcome.payload.previous_data) == (data, previous)


def test_default_retry_delay_is_the_configured_value_without_back_off():
    with cqrs_settings_and_transport(replica={"CQRS_RETRY_DELAY": 2}):
        delay = SimplestModelRef.get_cqrs_retry_delay(3)
    assert (delay, type(delay)) == (2, int)
    with cqrs_settings_and_transport(replica={"CQRS_RETRY_DELAY": 1.5}):
        assert SimplestModelRef.get_cqrs_retry_delay(0) == 1.5
    with cqrs_settings_and_transport(replica={"CQRS_RETRY_DELAY": 2, "CQRS_RETRY_BACKOFF": 2}):
        assert [SimplestModelRef.get_cqrs_retry_delay(n) for n in (0, 1, 2)] == [2, 4.0, 8.0]

