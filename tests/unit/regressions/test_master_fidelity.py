"""Master behaviours kept from django-cqrs 3.1.0 (issue 10, gaps 1, 5, 6 and the admin action):
expression fields after a save, ``get_tracked_fields_data()``, overridden hooks in every path.
Runs on SQLite and (``make test-pg``) PostgreSQL."""

from __future__ import annotations

import django

import io
import json
from typing import Any

import pytest
from django.contrib import admin, messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Upper
from django.test.utils import CaptureQueriesContext

from dj_cqrs.admin import CQRSAdminMasterSyncMixin
from dj_cqrs.master import hooks, serializers
from tests.apps.master_app.models import (
    HOOKED_SYNCS,
    Author,
    CounterModel,
    FilteredModel,
    HookedAuthor,
    HookedModel,
    NoProduceModel,
    Publisher,
    SimplestModel,
    TrackedModel,
)
from tests.unit.conftest import cqrs_settings_and_transport

pytestmark = pytest.mark.django_db(transaction=True)

OUTBOX = pytest.mark.parametrize("outbox", [True, False], ids=["outbox", "no-outbox"])


def sent(transport: Any, cqrs_id: str | None = None) -> list[dict[str, Any]]:
    return [m.data for m in transport.published if cqrs_id is None or m.data["cqrs_id"] == cqrs_id]


def selects_of(queries: CaptureQueriesContext, table: str) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT") and table in q["sql"]]


# -- expressions after a save -----------------------------------------------------------------------


@OUTBOX
def test_f_expression_holds_the_stored_value_after_save_and_is_not_applied_again(outbox):
    with cqrs_settings_and_transport(master={"CQRS_OUTBOX": outbox}) as transport:
        obj = CounterModel.objects.create(count=1)
        obj.count = F("count") + 1
        obj.save()
        assert obj.count == 2
        assert obj.cqrs_revision == 1
        obj.save()

    stored = CounterModel.objects.get(pk=obj.pk)
    assert (stored.count, stored.cqrs_revision) == (2, 2)
    bodies = sent(transport)
    assert [b["instance_data"]["count"] for b in bodies] == [1, 2, 2]
    assert [b["previous_data"] for b in bodies] == [
        {"name": None, "count": None, "hits": None, "cqrs_revision": None},
        {"count": 1, "cqrs_revision": 0},
        {"cqrs_revision": 1},
    ]
    assert obj.get_tracked_fields_data() == {"cqrs_revision": 1}


def test_no_expression_is_ever_snapshotted_or_sent(transport):
    obj = CounterModel.objects.create(count=5)
    for step in (1, 10):
        obj.count = F("count") + step
        obj.save()
    text = json.dumps(sent(transport))
    assert "F(" not in text and "Value(" not in text
    assert [b["previous_data"].get("count") for b in sent(transport)] == [None, 5, 6]
    assert obj.count == CounterModel.objects.get(pk=obj.pk).count == 16


def test_the_refresh_is_one_query_and_only_when_a_save_wrote_expressions(transport):
    obj = CounterModel.objects.create(count=1)
    table = CounterModel._meta.db_table

    with CaptureQueriesContext(connection) as plain:
        obj.name = "plain"
        obj.save()
    assert selects_of(plain, table) == []  # the common save reads nothing back

    with CaptureQueriesContext(connection) as with_expressions:
        obj.count = F("count") * 3
        obj.hits = F("hits") + 1
        obj.save()
    reads = selects_of(with_expressions, table)
    # Django 6.0+ reads the expression fields back in the UPDATE itself (RETURNING) where the
    # database supports it; older versions need one SELECT.
    # On PostgreSQL the UPDATE may be wrapped in dj_cqrs's outbox statement (a CTE, or its
    # prepared form run with EXECUTE; see dj_cqrs.master.outbox.inline).
    returning = [
        q["sql"]
        for q in with_expressions.captured_queries
        if (q["sql"].startswith((f'UPDATE "{table}"', f'WITH "dj_cqrs_changed" AS (UPDATE "{table}"')) and " RETURNING " in q["sql"])
        or (q["sql"].startswith("EXECUTE dj_cqrs_") and django.VERSION >= (6, 0))
    ]
    assert len(reads) + len(returning) == 1  # count, hits and the revision in one query
    assert (obj.count, obj.hits, obj.cqrs_revision) == (3, 1, 2)


def test_function_expressions_on_create_and_update_are_read_back(transport):
    obj = CounterModel.objects.create(name=Upper(Value("new")))
    assert obj.name == "NEW"
    obj.name = Upper(Value("next"))
    obj.save()
    assert obj.name == "NEXT"
    assert [b["instance_data"]["name"] for b in sent(transport)] == ["NEW", "NEXT"]
    assert sent(transport)[-1]["previous_data"]["name"] == "NEW"


def test_models_that_publish_nothing_hold_the_stored_value_too(transport):
    quiet = NoProduceModel.objects.create(name="a")
    quiet.name = Upper(F("name"))
    quiet.save()
    assert quiet.name == "A"
    assert sent(transport) == []


def test_expressions_are_read_back_inside_the_transaction(transport):
    obj = CounterModel.objects.create(count=1)
    with transaction.atomic():
        obj.count = F("count") + 1
        obj.save()
        assert obj.count == 2
        obj.count = F("count") + 1
        obj.save()
        assert obj.count == 3
    assert CounterModel.objects.get(pk=obj.pk).count == 3
    assert [b["instance_data"]["count"] for b in sent(transport)] == [1, 3]


def test_a_field_left_out_of_update_fields_keeps_its_expression_until_it_is_saved(transport):
    obj = CounterModel.objects.create(count=1, hits=1)
    obj.hits = F("hits") + 1
    obj.name = "x"
    obj.save(update_fields=["name"])
    assert serializers.is_expression(obj.hits)  # not written: Django leaves it pending
    assert CounterModel.objects.get(pk=obj.pk).hits == 1
    obj.save()
    assert obj.hits == CounterModel.objects.get(pk=obj.pk).hits == 2
    assert "F(" not in json.dumps(sent(transport))


# -- get_tracked_fields_data -------------------------------------------------------------------------


def test_tracked_data_after_create_uses_attnames_for_foreign_keys(transport):
    publisher = Publisher.objects.create(name="p")
    obj = TrackedModel.objects.create(status="new", owner=publisher)
    assert obj.get_tracked_fields_data() == sent(transport)[-1]["previous_data"] == {"status": None, "owner_id": None}


def test_tracked_data_after_update_uses_field_names(transport):
    first, second = Publisher.objects.create(name="a"), Publisher.objects.create(name="b")
    obj = TrackedModel.objects.create(status="new", owner=first)
    obj.owner = second
    obj.status = "done"
    obj.save()
    assert obj.get_tracked_fields_data() == sent(transport)[-1]["previous_data"] == {"owner": first.pk, "status": "new"}


def test_tracked_data_is_none_before_the_first_save_and_kept_until_the_next(transport):
    TrackedModel.objects.create(status="new")
    loaded = TrackedModel.objects.get()
    loaded.status = "changed"
    assert loaded.get_tracked_fields_data() is None
    assert TrackedModel(status="x").get_tracked_fields_data() is None
    loaded.save()
    loaded.status = "again"
    assert loaded.get_tracked_fields_data() == {"status": "new"}


def test_tracked_data_of_saves_merged_in_a_transaction_is_the_message_s(transport):
    first = Publisher.objects.create(name="a")
    obj = TrackedModel.objects.create(status="new")
    with transaction.atomic():
        obj.status = "a"
        obj.save()
        assert obj.get_tracked_fields_data() == {"status": "new"}
        obj.owner = first
        obj.status = "b"
        obj.save()
        assert obj.get_tracked_fields_data() == {"status": "new", "owner": None}
    assert sent(transport)[-1]["previous_data"] == obj.get_tracked_fields_data()


# -- overridden hooks --------------------------------------------------------------------------------


def test_overrides_are_found_once_per_model():
    assert not any(hooks.overrides(SimplestModel, hook) for hook in hooks.OVERRIDABLE_HOOKS)
    assert all(hooks.overrides(HookedModel, hook) for hook in hooks.OVERRIDABLE_HOOKS)
    assert hooks.overrides(HookedAuthor, "to_cqrs_dict")
    assert not hooks.overrides(HookedAuthor, "cqrs_sync")
    assert not hooks.overrides(Author, "to_cqrs_dict")


@OUTBOX
def test_save_messages_use_the_overrides(outbox):
    with cqrs_settings_and_transport(master={"CQRS_OUTBOX": outbox}) as transport:
        obj = HookedModel.objects.create(name="a")
        obj.name = "b"
        obj.save()
    bodies = sent(transport)
    assert [(b["instance_data"]["label"], b["instance_data"]["sync"]) for b in bodies] == [("<a>", False), ("<b>", False)]
    assert [b["previous_data"] for b in bodies] == [{"name": None, "extra": "yes"}, {"name": "a", "extra": "yes"}]
    assert obj.get_tracked_fields_data() == {"name": "a", "extra": "yes"}


def test_outbox_rows_published_by_the_relay_use_the_override():
    from dj_cqrs.master.payloads import payloads_for_rows
    from dj_cqrs.master.outbox import store

    with cqrs_settings_and_transport(master={"CQRS_OUTBOX": True}):
        obj = HookedModel.objects.create(name="a")
        rows = store.read_rows(store.outbox_model().objects.filter(cqrs_id="hooked"))
        payloads = [payload for _, payload in payloads_for_rows(rows, "default")]
    assert [p.instance_data["label"] for p in payloads if p is not None] == ["<a>"]
    assert obj.pk == payloads[0].pk


@OUTBOX
def test_instance_sync_uses_the_overrides(outbox):
    obj = HookedModel.objects.create(name="a")
    loaded = HookedModel.objects.get(pk=obj.pk)
    with cqrs_settings_and_transport(master={"CQRS_OUTBOX": outbox}) as transport:
        assert loaded.cqrs_sync(queue="replica") is True
    (body,) = sent(transport)
    assert body["signal_type"] == "SYNC"
    assert (body["instance_data"]["label"], body["instance_data"]["sync"]) == ("<a>", True)
    assert body["previous_data"] == {"fresh": True}


def test_serializer_model_override_is_used_without_a_query_per_row(transport):
    authors = [Author.objects.create(id=n, name=f"a{n}") for n in range(1, 6)]
    transport.reset()
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        for author in HookedAuthor.objects.filter(pk__in=[a.pk for a in authors]):
            author.name = author.name + "!"
            author.save()
    bodies = sent(transport, "hooked_author")
    assert sorted(b["instance_data"]["shout"] for b in bodies) == ["A1!", "A2!", "A3!", "A4!", "A5!"]
    author_reads = selects_of(queries, Author._meta.db_table)
    assert len(author_reads) <= 2  # the filter above and one read of the committed rows, not one per row


def test_bulk_dump_uses_to_cqrs_dict(tmp_path):
    HookedModel.objects.create(name="a")
    HookedModel.objects.create(name="b")
    path = tmp_path / "dump.jsonl"
    call_command("cqrs_bulk_dump", cqrs_id="hooked", output=str(path), stdout=io.StringIO(), stderr=io.StringIO())
    header, *lines = path.read_text().splitlines()
    assert header == "hooked"
    assert [json.loads(line)["label"] for line in lines] == ["<a>", "<b>"]


def test_sync_command_and_diff_sync_call_the_cqrs_sync_override(transport):
    shown = HookedModel.objects.create(name="a")
    hidden = HookedModel.objects.create(name="b", hidden=True)
    HOOKED_SYNCS.clear()
    transport.reset()

    out = io.StringIO()
    call_command("cqrs_sync", cqrs_id="hooked", filter="{}", queue="replica", stdout=out, stderr=io.StringIO())
    assert sorted(HOOKED_SYNCS) == [shown.pk, hidden.pk]
    assert [(b["instance_pk"], b["instance_data"]["sync"]) for b in sent(transport)] == [(shown.pk, True)]

    HOOKED_SYNCS.clear()
    transport.reset()
    stdin = io.StringIO(f"hooked,2024-01-01 00:00:00+00:00,replica\n[{shown.pk}, {hidden.pk}]\n")
    call_command("cqrs_diff_sync", stdin=stdin, stdout=io.StringIO(), stderr=io.StringIO())
    assert sorted(HOOKED_SYNCS) == [shown.pk, hidden.pk]
    assert [b["instance_pk"] for b in sent(transport)] == [shown.pk]


# -- admin action ------------------------------------------------------------------------------------


def _model_admin(model: Any, **attrs: Any) -> Any:
    cls = type("SyncAdmin", (CQRSAdminMasterSyncMixin, admin.ModelAdmin), attrs)
    return cls(model, admin.AdminSite())


def _request(rf: Any, path: str = "/") -> Any:
    request = rf.post(path)
    request.user = type("U", (), {"is_active": True, "is_staff": True, "has_perm": lambda *a, **k: True})()
    request.session = {}
    request._messages = FallbackStorage(request)
    return request


def test_admin_without_actions_gets_no_sync_action(rf):
    assert _model_admin(SimplestModel, actions=None).get_actions(_request(rf)) == {}
    assert _model_admin(SimplestModel).get_actions(_request(rf, "/?_popup=1")) == {}
    assert list(_model_admin(SimplestModel).get_actions(_request(rf))) == ["delete_selected", "sync_items"]


def test_admin_action_reports_one_message_with_the_objects_not_synced(transport, rf):
    kept = FilteredModel.objects.create(name="kept")
    skipped = FilteredModel.objects.create(name="skip")
    model_admin = _model_admin(FilteredModel)
    request = _request(rf)
    transport.reset()

    model_admin.sync_items(request, FilteredModel.objects.all())

    assert [b["instance_pk"] for b in sent(transport)] == [kept.pk]
    assert [(m.level, m.message) for m in request._messages] == [
        (messages.INFO, f"1 successfully synced. 1 failed: [<FilteredModel: FilteredModel object ({skipped.pk})>]")
    ]


def test_admin_action_calls_the_cqrs_sync_override(transport, rf):
    shown = HookedModel.objects.create(name="a")
    hidden = HookedModel.objects.create(name="b", hidden=True)
    HOOKED_SYNCS.clear()
    transport.reset()
    request = _request(rf)

    _model_admin(HookedModel).sync_items(request, HookedModel.objects.all())

    assert sorted(HOOKED_SYNCS) == [shown.pk, hidden.pk]
    assert [b["instance_pk"] for b in sent(transport)] == [shown.pk]
    assert [m.message for m in request._messages] == [
        f"1 successfully synced. 1 failed: [<HookedModel: HookedModel object ({hidden.pk})>]"
    ]


def test_admin_action_with_nothing_selected(transport, rf):
    request = _request(rf)
    _model_admin(SimplestModel).sync_items(request, [])
    assert [m.message for m in request._messages] == ["0 successfully synced. 0 failed: []"]
