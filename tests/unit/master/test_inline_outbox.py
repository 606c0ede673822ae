"""PostgreSQL: a save's outbox row is written by the statement that writes the object
(``dj_cqrs.master.outbox.inline``). Runs in the PostgreSQL unit pass (``make test``); skipped on
SQLite, where saves take the general path."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection, transaction
from django.db.models.signals import pre_save
from django.test.utils import CaptureQueriesContext

from dj_cqrs.correlation import correlation_scope
from dj_cqrs.master.outbox import prepared
from dj_cqrs.models import OutboxEvent
from tests.apps.master_app.models import MetaModel, SimplestModel, TrackedModel, UUIDPkModel
from tests.unit.conftest import bodies

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the inline outbox write is PostgreSQL's"),
]


@pytest.fixture(autouse=True)
def _unprepared(settings):
    """The statements themselves (WITH ...); prepared statements have their own tests below."""
    settings.CQRS = {**settings.CQRS, "master": {**settings.CQRS.get("master", {}), "prepared_statements": False}}
    yield
    prepared.reset()


def _writes(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "dj_cqrs_outbox" in q["sql"] or "master_app" in q["sql"]]



def test_autocommit_create_is_one_statement_with_its_outbox_row(transport):
    with CaptureQueriesContext(connection) as queries:
        obj = SimplestModel.objects.create(name="a")
    statements = [q["sql"] for q in queries.captured_queries]
    # The first statement (no BEGIN before it) writes both rows; what follows is the publishing
    # of the in-memory transport, which runs in the committing thread.
    assert statements[0].startswith('WITH "dj_cqrs_changed" AS (INSERT INTO "master_app_simplestmodel"')
    assert len(_writes(queries)) == 1 + len([s for s in statements[1:] if "dj_cqrs_outbox" in s])
    assert not any(s.startswith('INSERT INTO "dj_cqrs_outbox"') for s in statements)
    row = OutboxEvent.objects.get()
    assert (row.cqrs_id, row.signal_type, row.object_pk, row.revision) == ("simplest", "SAVE", str(obj.pk), 0)
    assert obj.pk is not None and obj.cqrs_revision == 0
    assert [(b["instance_pk"], b["instance_data"]["name"], b["instance_data"]["cqrs_revision"]) for b in bodies(transport)] == [
        (obj.pk, "a", 0)
    ]


def test_autocommit_update_bumps_the_revision_in_the_same_statement(transport):
    obj = SimplestModel.objects.create(name="a")
    obj.name = "b"
    with CaptureQueriesContext(connection) as queries:
        obj.save()
    statements = [q["sql"] for q in queries.captured_queries]
    assert statements[0].startswith('WITH "dj_cqrs_changed" AS (UPDATE "master_app_simplestmodel"')
    assert [s for s in statements if "master_app_simplestmodel" in s] == statements[:1]
    assert not any(s.startswith('INSERT INTO "dj_cqrs_outbox"') for s in statements)
    assert obj.cqrs_revision == 1  # the stored value, not a pending F() expression
    rows = list(OutboxEvent.objects.order_by("id").values_list("object_pk", "revision"))
    assert rows == [(str(obj.pk), 0), (str(obj.pk), 1)]
    assert [b["instance_data"]["cqrs_revision"] for b in bodies(transport)] == [0, 1]
    assert SimplestModel.objects.get(pk=obj.pk).cqrs_revision == 1


def test_rolled_back_transaction_leaves_neither_row_nor_event(transport):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            SimplestModel.objects.create(name="a")
            raise RuntimeError
    assert OutboxEvent.objects.count() == 0
    assert SimplestModel.objects.count() == 0
    assert bodies(transport) == []


def test_second_save_in_a_transaction_merges_into_the_first_event(transport):
    with transaction.atomic():
        obj = SimplestModel.objects.create(name="a")
        obj.name = "b"
        obj.save()
    assert OutboxEvent.objects.count() == 1
    assert [(b["instance_data"]["name"], b["instance_data"]["cqrs_revision"]) for b in bodies(transport)] == [("b", 0)]


def test_savepoint_rollback_discards_the_inline_row(transport):
    with transaction.atomic():
        kept = SimplestModel.objects.create(name="kept")
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                SimplestModel.objects.create(name="gone")
                raise RuntimeError
    assert list(OutboxEvent.objects.values_list("object_pk", flat=True)) == [str(kept.pk)]
    assert [b["instance_data"]["name"] for b in bodies(transport)] == ["kept"]


def test_save_nested_in_a_receiver_gets_its_own_row(transport):
    def nested(sender, instance, **kwargs):
        if instance.name == "outer":
            SimplestModel.objects.create(name="inner")

    pre_save.connect(nested, sender=SimplestModel, dispatch_uid="inline-nested")
    try:
        outer = SimplestModel.objects.create(name="outer")
    finally:
        pre_save.disconnect(sender=SimplestModel, dispatch_uid="inline-nested")
    inner = SimplestModel.objects.get(name="inner")
    rows = dict(OutboxEvent.objects.values_list("object_pk", "revision"))
    assert rows == {str(inner.pk): 0, str(outer.pk): 0}
    assert sorted((b["instance_pk"], b["instance_data"]["name"]) for b in bodies(transport)) == sorted(
        [(inner.pk, "inner"), (outer.pk, "outer")]
    )


def test_tracked_fields_and_correlation_are_stored_with_the_event(transport):
    obj = TrackedModel.objects.create(status="old")
    obj.status = "new"
    with correlation_scope("req-1"):
        obj.save()
    last = bodies(transport)[-1]
    assert last["previous_data"] == {"status": "old"}
    assert last["correlation_id"] == "req-1"
    row = OutboxEvent.objects.order_by("-id").first()
    assert '"correlation_id":"req-1"' in row.data and '"status":"old"' in row.data


def test_uuid_primary_key_text_matches_python(transport):
    obj = UUIDPkModel.objects.create()
    assert isinstance(obj.pk, uuid.UUID)
    assert OutboxEvent.objects.get().object_pk == str(obj.pk)
    assert bodies(transport)[0]["instance_pk"] == str(obj.pk)


def test_models_with_a_meta_hook_take_the_general_path(transport):
    with CaptureQueriesContext(connection) as queries:
        MetaModel.objects.create(name="m")
    assert not any(q["sql"].startswith("WITH") for q in queries.captured_queries)
    assert OutboxEvent.objects.count() == 1
    assert len(bodies(transport)) == 1


def _prepared_on(settings):
    settings.CQRS = {**settings.CQRS, "master": {**settings.CQRS.get("master", {}), "prepared_statements": True}}


def test_autocommit_saves_run_a_prepared_statement(settings, transport):
    _prepared_on(settings)
    first = SimplestModel.objects.create(name="a")
    with CaptureQueriesContext(connection) as queries:
        second = SimplestModel.objects.create(name="b")
        second.name = "c"
        second.save()
    executed = [q["sql"] for q in queries.captured_queries if "master_app_simplestmodel" in q["sql"] or q["sql"].startswith("EXECUTE")]
    assert [s.split("(")[0] for s in executed] == [executed[0].split("(")[0], executed[1].split("(")[0]]
    assert all(s.startswith("EXECUTE dj_cqrs_") for s in executed)
    assert executed[0].split("(")[0] != executed[1].split("(")[0]  # one statement per shape
    assert (second.cqrs_revision, first.cqrs_revision) == (1, 0)
    rows = list(OutboxEvent.objects.order_by("id").values_list("object_pk", "revision"))
    assert rows == [(str(first.pk), 0), (str(second.pk), 0), (str(second.pk), 1)]
    assert [(b["instance_data"]["name"], b["instance_data"]["cqrs_revision"]) for b in bodies(transport)] == [
        ("a", 0),
        ("b", 0),
        ("c", 1),
    ]


def test_saves_in_a_transaction_do_not_use_prepared_statements(settings, transport):
    _prepared_on(settings)
    with CaptureQueriesContext(connection) as queries:
        with transaction.atomic():
            SimplestModel.objects.create(name="a")
    assert not any(q["sql"].startswith("EXECUTE") for q in queries.captured_queries)
    assert OutboxEvent.objects.count() == 1


def test_a_lost_prepared_statement_falls_back_and_turns_them_off(settings, transport, caplog):
    _prepared_on(settings)
    SimplestModel.objects.create(name="a")  # prepares the INSERT's statement
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # what a pooler or DISCARD ALL does behind our back
    with caplog.at_level("WARNING", logger="django-cqrs.outbox"):
        obj = SimplestModel.objects.create(name="b")
        again = SimplestModel.objects.create(name="c")
    assert "prepared outbox statement disappeared" in caplog.text
    assert caplog.text.count("prepared outbox statement disappeared") == 1
    assert SimplestModel.objects.count() == 3
    assert sorted(OutboxEvent.objects.values_list("object_pk", flat=True)) == sorted(
        str(pk) for pk in SimplestModel.objects.values_list("pk", flat=True)
    )
    assert [b["instance_data"]["name"] for b in bodies(transport)] == ["a", "b", "c"]
    assert obj.pk < again.pk


def test_bulk_create_writes_the_outbox_rows_in_its_inserts(transport):
    with CaptureQueriesContext(connection) as queries:
        created = SimplestModel.cqrs.bulk_create([SimplestModel(name=f"b{i}") for i in range(5)], batch_size=2)
    statements = [q["sql"] for q in queries.captured_queries]
    inserts = [s for s in statements if "master_app_simplestmodel" in s]
    assert len(inserts) == 3 and all(s.startswith('WITH "dj_cqrs_changed" AS (INSERT INTO') for s in inserts)
    assert not any(s.startswith('INSERT INTO "dj_cqrs_outbox"') for s in statements)
    rows = list(OutboxEvent.objects.order_by("id").values_list("object_pk", "revision"))
    assert rows == [(str(obj.pk), 0) for obj in created]
    assert [(b["instance_pk"], b["instance_data"]["name"]) for b in bodies(transport)] == [
        (obj.pk, obj.name) for obj in created
    ]


def test_bulk_update_is_one_statement_with_its_outbox_rows(transport):
    objs = SimplestModel.cqrs.bulk_create([SimplestModel(name=f"u{i}") for i in range(4)])
    with CaptureQueriesContext(connection) as queries:
        count = SimplestModel.cqrs.bulk_update(SimplestModel.objects.filter(name__in=["u1", "u2"]), name="changed")
    assert count == 2
    writes = [q["sql"] for q in queries.captured_queries if "master_app_simplestmodel" in q["sql"] and not q["sql"].startswith("SELECT")]
    assert len(writes) == 1 and writes[0].startswith('WITH "dj_cqrs_changed" AS (UPDATE "master_app_simplestmodel"')
    changed = {objs[1].pk, objs[2].pk}
    assert set(SimplestModel.objects.filter(cqrs_revision=1).values_list("pk", flat=True)) == changed
    later = bodies(transport)[4:]
    assert sorted((b["instance_pk"], b["instance_data"]["name"], b["instance_data"]["cqrs_revision"]) for b in later) == sorted(
        (pk, "changed", 1) for pk in changed
    )
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 0
