"""PostgreSQL: an autocommit ``delete()`` writes its outbox row with the DELETE statement itself
(``dj_cqrs.master.outbox.inline_delete``). Runs in the PostgreSQL unit pass (``make test``);
skipped on SQLite, where deletes take the general path."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from django.db import connection, transaction
from django.db.models.signals import post_delete, pre_delete
from django.test.utils import CaptureQueriesContext

from dj_cqrs.correlation import correlation_scope
from dj_cqrs.master.outbox import prepared
from dj_cqrs.models import OutboxEvent
from tests.apps.master_app.models import (
    Author,
    Book,
    CustomDeleteModel,
    MetaModel,
    SimplestModel,
    UUIDPkModel,
)
from tests.unit.conftest import bodies

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the inline outbox delete is PostgreSQL's"
    ),
]

FAST = 'WITH "dj_cqrs_deleted" AS (DELETE FROM '


@pytest.fixture(autouse=True)
def _unprepared(settings):
    """The statements themselves (WITH ...); prepared statements have their own tests below."""
    settings.CQRS = {
        **settings.CQRS,
        "master": {**settings.CQRS.get("master", {}), "prepared_statements": False},
    }
    yield
    prepared.reset()


def _statements(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries]


def _deletes(queries: CaptureQueriesContext) -> list[str]:
    return [s for s in _statements(queries) if "DELETE" in s]


def _delete_rows() -> list[tuple[str, int | None]]:
    return list(
        OutboxEvent.objects.filter(signal_type="DELETE")
        .order_by("id")
        .values_list("object_pk", "revision")
    )


def test_autocommit_delete_is_one_statement_without_a_transaction(transport):
    obj = SimplestModel.objects.create(name="a")
    pk = obj.pk
    switched: list[tuple[bool, int]] = []  # (autocommit, statements run before)
    original = connection.set_autocommit

    def set_autocommit(autocommit, *args, **kwargs):
        switched.append((autocommit, len(connection.queries_log)))
        return original(autocommit, *args, **kwargs)

    with mock.patch.object(connection, "set_autocommit", set_autocommit):
        with CaptureQueriesContext(connection) as queries:
            result = obj.delete()
    statements = _statements(queries)
    # No BEGIN before the statement (ours or Django's); the publisher marks the row afterwards.
    start = len(connection.queries_log) - len(statements)
    assert all(before > start for _, before in switched)
    assert statements[0].startswith(FAST + '"master_app_simplestmodel"')
    # Nothing else touches the table; what follows is the in-memory transport's publishing.
    assert [s for s in statements if "master_app_simplestmodel" in s] == statements[:1]
    assert not any(s.startswith('INSERT INTO "dj_cqrs_outbox"') for s in statements)
    assert result == (1, {"master_app.SimplestModel": 1})
    assert (
        obj.pk is None and obj.cqrs_revision == 0
    )  # the stored revision, as the general path leaves it
    assert not SimplestModel.objects.filter(pk=pk).exists()
    assert _delete_rows() == [(str(pk), 1)]
    assert [
        (b["signal_type"], b["instance_pk"], b["instance_data"]["cqrs_revision"])
        for b in bodies(transport)
    ][1:] == [("DELETE", pk, 1)]
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 0


def test_payload_and_stored_data_are_those_of_the_general_path(transport):
    fast, general = SimplestModel.objects.create(name="a"), SimplestModel.objects.create(name="a")
    fast_pk, general_pk = fast.pk, general.pk
    with correlation_scope("corr-1"):
        fast.delete()
        with transaction.atomic():  # the general path
            general.delete()
    rows = {r.object_pk: r for r in OutboxEvent.objects.filter(signal_type="DELETE")}
    fast_row, general_row = rows[str(fast_pk)], rows[str(general_pk)]
    assert (fast_row.revision, general_row.revision) == (1, 1)
    fast_data = json.loads(fast_row.data, object_pairs_hook=list)
    general_data = json.loads(general_row.data, object_pairs_hook=list)
    fast_when = dict(dict(fast_data)["instance_data"])["cqrs_updated"]
    general_when = dict(dict(general_data)["instance_data"])["cqrs_updated"]
    # The same text but for the key and the timestamp: key order, spacing and number format.
    assert (
        fast_row.data.replace(f'"id":{fast_pk},', f'"id":{general_pk},').replace(
            fast_when, general_when
        )
        == general_row.data
    )
    assert [k for k, _ in fast_data] == ["correlation_id", "meta", "instance_data"]
    messages = [b for b in bodies(transport) if b["signal_type"] == "DELETE"]
    assert len(messages) == 2
    by_pk = {b["instance_pk"]: b for b in messages}
    published_fast, published_general = by_pk[fast_pk], by_pk[general_pk]
    assert list(published_fast) == list(published_general)
    assert (
        list(published_fast["instance_data"])
        == list(published_general["instance_data"])
        == [
            "id",
            "cqrs_revision",
            "cqrs_updated",
        ]
    )
    for body in (published_fast, published_general):
        body.pop("expires", None)
        body.pop("instance_pk")
        body["instance_data"].pop("id")
        body["instance_data"].pop("cqrs_updated")
    assert published_fast == published_general
    assert published_fast["correlation_id"] == "corr-1"


def test_a_stale_object_deletes_with_the_stored_revision(transport):
    obj = SimplestModel.objects.create(name="a")
    other = SimplestModel.objects.get(pk=obj.pk)
    other.save()
    other.save()
    pk = obj.pk
    obj.delete()  # obj still says revision 0; the row is at 2
    assert obj.cqrs_revision == 2
    assert _delete_rows() == [(str(pk), 3)]
    assert bodies(transport)[-1]["instance_data"]["cqrs_revision"] == 3


def test_a_new_object_with_the_key_continues_after_the_delete(transport):
    obj = SimplestModel.objects.create(name="a")
    obj.save()
    pk = obj.pk
    obj.delete()
    assert _delete_rows() == [(str(pk), 2)]
    again = SimplestModel.objects.create(id=pk, name="b")
    assert again.cqrs_revision == 3
    assert bodies(transport)[-1]["instance_data"]["cqrs_revision"] == 3


def test_custom_delete_data_and_other_keys(transport):
    obj = CustomDeleteModel.objects.create(name='quote " and \\ and é')
    uuid_obj = UUIDPkModel.objects.create()
    uuid_pk = uuid_obj.pk
    with CaptureQueriesContext(connection) as queries:
        obj.delete()
        uuid_obj.delete()
    assert len([s for s in _deletes(queries) if s.startswith(FAST)]) == 2
    custom, by_uuid = [b for b in bodies(transport) if b["signal_type"] == "DELETE"]
    assert custom["instance_data"]["custom"] == {"name": 'quote " and \\ and é'}
    assert list(custom["instance_data"]) == ["id", "cqrs_revision", "cqrs_updated", "custom"]
    assert by_uuid["instance_pk"] == str(uuid_pk) and by_uuid["instance_data"]["cqrs_revision"] == 1
    stored = json.loads(OutboxEvent.objects.get(signal_type="DELETE", object_pk=str(uuid_pk)).data)
    assert stored["instance_data"]["cqrs_revision"] == 1


def test_a_delete_in_a_transaction_takes_the_general_path(transport):
    obj = SimplestModel.objects.create(name="a")
    pk = obj.pk
    with CaptureQueriesContext(connection) as queries:
        with transaction.atomic():
            result = obj.delete()
    assert not any(s.startswith(FAST) for s in _statements(queries))
    assert any(s.startswith('INSERT INTO "dj_cqrs_outbox"') for s in _statements(queries))
    assert result == (1, {"master_app.SimplestModel": 1})
    assert _delete_rows() == [(str(pk), 1)]


def test_a_rolled_back_delete_leaves_the_row_and_no_event(transport):
    obj = SimplestModel.objects.create(name="a")
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            obj.delete()
            raise RuntimeError
    assert SimplestModel.objects.filter(name="a").count() == 1
    assert _delete_rows() == []
    assert [b["signal_type"] for b in bodies(transport)] == ["SAVE"]


def test_a_failing_statement_deletes_nothing_and_records_nothing(transport):
    obj = SimplestModel.objects.create(name="a")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION dj_cqrs_test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused'; END $$"
        )
        cursor.execute(
            'CREATE TRIGGER dj_cqrs_test_refuse BEFORE DELETE ON "master_app_simplestmodel" '
            "FOR EACH ROW EXECUTE FUNCTION dj_cqrs_test_refuse()"
        )
    try:
        with pytest.raises(Exception, match="refused"):
            obj.delete()
    finally:
        with connection.cursor() as cursor:
            cursor.execute('DROP TRIGGER dj_cqrs_test_refuse ON "master_app_simplestmodel"')
            cursor.execute("DROP FUNCTION dj_cqrs_test_refuse()")
    assert obj.pk is not None
    assert SimplestModel.objects.filter(pk=obj.pk).exists()
    assert _delete_rows() == []
    assert [b["signal_type"] for b in bodies(transport)] == ["SAVE"]


def test_a_row_already_gone_is_announced_as_by_the_general_path(transport):
    fast, general = SimplestModel.objects.create(name="a"), SimplestModel.objects.create(name="b")
    fast_pk, general_pk = fast.pk, general.pk
    SimplestModel.objects.filter(pk__in=[fast_pk, general_pk])._raw_delete(connection.alias)
    fast_result = fast.delete()
    with transaction.atomic():
        general_result = general.delete()
    assert fast_result == general_result == (0, {})
    assert fast.pk is None and general.pk is None
    assert _delete_rows() == [(str(fast_pk), 1), (str(general_pk), 1)]


def test_related_objects_take_the_general_path(transport):
    author = Author.objects.create(id=1, name="a")
    Book.objects.create(title="t", author=author)
    lonely = Author.objects.create(id=2, name="b")
    with CaptureQueriesContext(connection) as queries:
        result = author.delete()
    assert not any(s.startswith(FAST) for s in _statements(queries))
    assert result == (2, {"master_app.Book": 1, "master_app.Author": 1})
    assert Book.objects.count() == 0
    with CaptureQueriesContext(connection) as queries:
        lonely.delete()  # no book, but the collector plans a DELETE of its books all the same
    assert not any(s.startswith(FAST) for s in _statements(queries))
    assert _delete_rows() == [("1", 1), ("2", 1)]
    assert [b["instance_pk"] for b in bodies(transport) if b["signal_type"] == "DELETE"] == [1, 2]


@pytest.mark.parametrize("signal", [pre_delete, post_delete])
def test_other_delete_receivers_run_in_the_delete_transaction(transport, signal):
    seen: list[bool] = []

    def receiver(sender, instance, **kwargs):
        seen.append(connection.in_atomic_block)

    signal.connect(receiver, sender=SimplestModel)
    try:
        obj = SimplestModel.objects.create(name="a")
        with CaptureQueriesContext(connection) as queries:
            obj.delete()
    finally:
        signal.disconnect(receiver, sender=SimplestModel)
    assert seen == [True]
    assert not any(s.startswith(FAST) for s in _statements(queries))
    assert len(_delete_rows()) == 1


def test_a_meta_hook_takes_the_general_path(transport):
    obj = MetaModel.objects.create(name="m")
    with CaptureQueriesContext(connection) as queries:
        obj.delete()
    assert not any(s.startswith(FAST) for s in _statements(queries))
    assert bodies(transport)[-1]["meta"] == {"signal": "DELETE", "name": "m"}


def _prepared_on(settings):
    settings.CQRS = {
        **settings.CQRS,
        "master": {**settings.CQRS.get("master", {}), "prepared_statements": True},
    }


def test_autocommit_deletes_run_a_prepared_statement(settings, transport):
    _prepared_on(settings)
    objs = [SimplestModel.objects.create(name=f"p{i}") for i in range(3)]
    pks = [obj.pk for obj in objs]
    with CaptureQueriesContext(connection) as queries:
        for obj in objs:
            obj.delete()
    statements = _statements(queries)
    deletes = [s for s in statements if s.startswith("EXECUTE dj_cqrs_")]
    assert not any(FAST in s or "master_app_simplestmodel" in s for s in statements)
    assert len({s.split("(")[0] for s in deletes}) == 1 and len(deletes) == 3
    assert _delete_rows() == [(str(pk), 1) for pk in pks]
    assert [
        b["instance_data"]["cqrs_revision"]
        for b in bodies(transport)
        if b["signal_type"] == "DELETE"
    ] == [1, 1, 1]


def test_a_lost_prepared_statement_falls_back_and_turns_them_off(settings, transport, caplog):
    _prepared_on(settings)
    first, second, third = (SimplestModel.objects.create(name=n) for n in "abc")
    first.delete()  # prepares the statement
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # what a pooler or DISCARD ALL does behind our back
    pks = [second.pk, third.pk]
    with caplog.at_level("WARNING", logger="django-cqrs.outbox"):
        second.delete()
        third.delete()
    assert caplog.text.count("prepared outbox statement disappeared") == 1
    assert SimplestModel.objects.count() == 0
    assert [pk for pk, _ in _delete_rows()][1:] == [str(pk) for pk in pks]
    assert [b["instance_pk"] for b in bodies(transport) if b["signal_type"] == "DELETE"][1:] == pks
