"""``CQRS_SERIALIZER`` (DRF) with ``relate_cqrs_serialization``: nested data, commit-time reads,
and a constant number of serialization queries per transaction."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tests.apps.master_app.models import Author, Book, Publisher
from tests.apps.replica_app.models import AuthorRef

pytestmark = pytest.mark.django_db(transaction=True)


def test_instance_data_is_the_serializer_output_plus_cqrs_fields(transport):
    publisher = Publisher.objects.create(name="Penguin")
    with transaction.atomic():
        author = Author.objects.create(id=1, name="Ann", publisher=publisher)
        Book.objects.create(title="First", author=author)
        Book.objects.create(title="Second", author=author)

    [message] = transport.published
    data = message.data["instance_data"]
    assert data["id"] == 1
    assert data["name"] == "Ann"
    assert data["publisher"] == {"id": publisher.pk, "name": "Penguin"}
    assert sorted(b["title"] for b in data["books"]) == ["First", "Second"]  # serialized at commit
    assert data["cqrs_revision"] == 0
    assert data["cqrs_updated"] == str(Author.objects.get(pk=1).cqrs_updated)


def test_nested_data_reaches_a_custom_serialization_replica_with_meta(transport):
    publisher = Publisher.objects.create(name="Penguin")
    with transaction.atomic():
        author = Author.objects.create(id=1, name="Ann", publisher=publisher)
        Book.objects.create(title="First", author=author)
    transport.join(fail_fast=True)

    ref = AuthorRef.objects.get(pk=1)
    assert (ref.name, ref.publisher_name, ref.book_titles, ref.cqrs_revision) == ("Ann", "Penguin", ["First"], 0)

    author.name = "Anne"
    author.save()
    transport.join(fail_fast=True)
    ref.refresh_from_db()
    assert (ref.name, ref.cqrs_revision) == ("Anne", 1)


def _save_authors_in_one_transaction(ids, publisher):
    with CaptureQueriesContext(connection) as queries:
        with transaction.atomic():
            for pk in ids:
                Author.objects.create(id=pk, name=f"a{pk}", publisher=publisher)
    return [q["sql"] for q in queries.captured_queries]


def test_serialization_queries_do_not_grow_with_the_number_of_saves(transport):
    publisher = Publisher.objects.create(name="p")

    few = _save_authors_in_one_transaction(range(1, 4), publisher)
    many = _save_authors_in_one_transaction(range(10, 22), publisher)

    assert len(transport.published) == 3 + 12
    # Only the writes grow (the row and its outbox event); the commit-time serialization is one
    # query per model plus prefetch.
    # (and, for a key chosen by the caller, the lookup of a stored revision to continue from)
    few, many = (
        [
            q
            for q in sqls
            if "dj_cqrs_outbox" not in q
            # (Django 4.2 writes it without the `AS "cqrs_revision"` alias)
            and not q.startswith('SELECT "master_app_author"."cqrs_revision" ')
            and q.split(" ")[0] not in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")  # incl. the outbox sweep's
        ]
        for sqls in (few, many)
    )
    assert len(many) - len(few) == 12 - 3
    for sqls in (few, many):
        assert sum('JOIN "master_app_publisher"' in sql for sql in sqls) == 1
        assert sum('FROM "master_app_book"' in sql for sql in sqls) == 1


def test_updates_in_one_transaction_are_serialized_with_one_query(transport):
    publisher = Publisher.objects.create(name="p")
    authors = [Author.objects.create(id=pk, name="x", publisher=publisher) for pk in range(1, 6)]
    transport.reset()

    with CaptureQueriesContext(connection) as queries:
        with transaction.atomic():
            for author in authors:
                author.name = "y"
                author.save()
    sqls = [q["sql"] for q in queries.captured_queries]
    assert sum('JOIN "master_app_publisher"' in sql for sql in sqls) == 1
    assert sum('FROM "master_app_book"' in sql for sql in sqls) == 1
    assert [(m.data["instance_data"]["name"], m.data["instance_data"]["cqrs_revision"]) for m in transport.published] == [("y", 1)] * 5


def test_created_and_deleted_in_one_transaction_sends_only_the_delete(transport):
    with transaction.atomic():
        author = Author.objects.create(id=1, name="short-lived")
        author.delete()

    [message] = transport.published
    assert message.data["signal_type"] == "DELETE"
    assert message.data["instance_data"]["id"] == 1


def test_to_cqrs_dict_refetches_unless_sync(transport):
    publisher = Publisher.objects.create(name="p")
    author = Author.objects.create(id=1, name="stored", publisher=publisher)
    author.name = "in memory"

    assert author.to_cqrs_dict()["name"] == "stored"
    assert author.to_cqrs_dict(sync=True)["name"] == "in memory"
    assert author.to_cqrs_dict(using="default")["publisher"] == {"id": publisher.pk, "name": "p"}


def test_cqrs_sync_of_a_serializer_model_uses_the_instance(transport):
    author = Author.objects.create(id=1, name="a")
    transport.reset()
    assert author.cqrs_sync(queue="replica") is True
    [message] = transport.published
    assert message.routing_key == "cqrs.replica.author"
    assert message.data["signal_type"] == "SYNC"
    assert message.data["instance_data"]["books"] == []
