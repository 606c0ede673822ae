"""``get_tracked_fields_data()`` and ``previous_data`` of tracked fields (issue 10, gap 5)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from dmaster.models import Author, Book

from scenarios._base import captured_produce


def check_tracked_after_create_with_foreign_key() -> Any:
    author = Author.objects.create(name="a")
    with captured_produce() as sent:
        book = Book.objects.create(title="t", author=author, price=2)
    return {"tracked": book.get_tracked_fields_data(), "previous_data": [p.previous_data for p in sent]}


def check_tracked_after_create_without_foreign_key() -> Any:
    with captured_produce() as sent:
        book = Book.objects.create(title="t")
    return {"tracked": book.get_tracked_fields_data(), "previous_data": [p.previous_data for p in sent]}


def check_tracked_after_update_of_foreign_key() -> Any:
    first = Author.objects.create(name="a")
    second = Author.objects.create(name="b")
    book = Book.objects.create(title="t", author=first)
    with captured_produce() as sent:
        book.author = second
        book.title = "u"
        book.save()
    return {"tracked": book.get_tracked_fields_data(), "previous_data": [p.previous_data for p in sent]}


def check_tracked_after_save_without_changes() -> Any:
    book = Book.objects.create(title="t")
    with captured_produce() as sent:
        book.save()
    return {"tracked": book.get_tracked_fields_data(), "previous_data": [p.previous_data for p in sent]}


def check_tracked_before_any_save() -> Any:
    Book.objects.create(title="t")
    loaded = Book.objects.get()
    fresh = loaded.get_tracked_fields_data()
    loaded.title = "u"
    return {
        "loaded": fresh,
        "loaded_then_changed": loaded.get_tracked_fields_data(),
        "unsaved": Book(title="x").get_tracked_fields_data(),
    }


def check_tracked_kept_until_next_save() -> Any:
    book = Book.objects.create(title="t")
    book.title = "u"
    book.save()
    book.title = "v"
    return {"tracked": book.get_tracked_fields_data()}


def check_tracked_two_saves_in_transaction() -> Any:
    book = Book.objects.create(title="t", price=1)
    with captured_produce() as sent:
        with transaction.atomic():
            book.title = "u"
            book.save()
            first = book.get_tracked_fields_data()
            book.title = "v"
            book.save()
            second = book.get_tracked_fields_data()
    return {
        "first": first,
        "second": second,
        "after_commit": book.get_tracked_fields_data(),
        "previous_data": [p.previous_data for p in sent],
    }
