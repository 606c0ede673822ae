"""Errors inside the default replica hooks and ``consume`` (issue 10, gaps 8 and 9)."""

from __future__ import annotations

import copy
from typing import Any

from dreplica.models import BookRef, GenreRef, NoDbRef, ShelfRef

from dj_cqrs.controller.consumer import consume, route_signal_to_replica_model
from dj_cqrs.dataclasses import TransportPayload
from scenarios._base import documented, outcome

UPDATED = "2024-01-02T03:04:05+00:00"


def _book(revision: int, **values: Any) -> dict[str, Any]:
    return {"id": 1, "title": "t", "price": "1.00", "cqrs_revision": revision, "cqrs_updated": UPDATED, **values}


def _consume(signal: str, cqrs_id: str, data: dict[str, Any], previous: Any = None) -> Any:
    result = outcome(lambda: consume(TransportPayload(signal, cqrs_id, data, data.get("id"), previous_data=previous)))
    value = result.get("returned")
    if isinstance(value, str) and value.startswith("<"):  # an instance: compared by class
        result = {"returned": value.split(":")[0] + ">"}
    return result


def _rows() -> list[Any]:
    return list(BookRef.objects.order_by("pk").values("id", "title", "cqrs_revision"))


def check_update_database_error() -> Any:
    created = _consume("SAVE", "diff_book", _book(0))
    failed = _consume("SAVE", "diff_book", _book(1, title=None))
    return {"created": created, "failed": failed, "rows": _rows()}


def check_update_validation_error() -> Any:
    _consume("SAVE", "diff_book", _book(0))
    failed = _consume("SAVE", "diff_book", _book(1, published="not a date"))
    return {"failed": failed, "rows": _rows()}


def check_create_errors() -> Any:
    database = _consume("SAVE", "diff_book", _book(0, title=None))
    validation = _consume("SAVE", "diff_book", _book(0, published="not a date"))
    return {"database": database, "validation": validation, "rows": _rows()}


def check_delete_database_error() -> Any:
    GenreRef.objects.create(id=1, name="g", cqrs_revision=0, cqrs_updated=UPDATED)
    ShelfRef.objects.create(id=1, genre_id=1, cqrs_revision=0, cqrs_updated=UPDATED)
    data = {"id": 1, "cqrs_revision": 1, "cqrs_updated": UPDATED}
    via_consume = _consume("DELETE", "diff_genre", dict(data))
    direct = outcome(lambda: GenreRef.cqrs_delete(dict(data)))
    return {"consume": via_consume, "cqrs_delete": direct, "genres": GenreRef.objects.count()}


def check_delete_without_cqrs_fields() -> Any:
    _consume("SAVE", "diff_book", _book(0))
    no_revision = _consume("DELETE", "diff_book", {"id": 1, "cqrs_updated": UPDATED})
    no_updated = _consume("DELETE", "diff_book", {"id": 1, "cqrs_revision": 1})
    direct = outcome(lambda: BookRef.cqrs_delete({"id": 1}))
    return {"no_revision": no_revision, "no_updated": no_updated, "direct": direct, "rows": _rows()}


def check_unknown_signal_type() -> Any:
    routed = outcome(lambda: route_signal_to_replica_model("UPSERT", "diff_book", _book(0)))
    return {"route": routed, "rows": _rows()}


@documented("`TransportPayload` accepts any `signal_type`")
def check_unknown_signal_type_payload() -> Any:
    return outcome(lambda: consume(TransportPayload("UPSERT", "diff_book", _book(0), 1)))


def check_consume_unknown_cqrs_id() -> Any:
    return _consume("SAVE", "diff_nothing", _book(0))


def check_handler_changes_do_not_leak_into_payload() -> Any:
    data = {"id": 1, "title": "t", "nested": {"a": 1}}
    previous = {"title": "old"}
    payload = TransportPayload("SAVE", "diff_mutating_handler", data, 1, previous_data=previous)
    before = copy.deepcopy((payload.instance_data, payload.previous_data))
    saved = outcome(lambda: consume(payload))
    delete = TransportPayload("DELETE", "diff_mutating_handler", {"id": 1}, 1)
    deleted = outcome(lambda: consume(delete))
    return {
        "saved": saved,
        "deleted": deleted,
        "unchanged": (payload.instance_data, payload.previous_data) == before,
        "delete_unchanged": delete.instance_data == {"id": 1},
    }


def check_no_db_operations_default_hooks() -> Any:
    save = _consume("SAVE", "diff_nodb", {"id": 1, "name": "n", "cqrs_revision": 0, "cqrs_updated": UPDATED})
    sync = _consume("SYNC", "diff_nodb", {"id": 1, "name": "n", "cqrs_revision": 0, "cqrs_updated": UPDATED})
    delete = _consume("DELETE", "diff_nodb", {"id": 1, "cqrs_revision": 1, "cqrs_updated": UPDATED})
    direct_save = outcome(lambda: NoDbRef.cqrs_save({"id": 1, "cqrs_revision": 0, "cqrs_updated": UPDATED}))
    direct_delete = outcome(lambda: NoDbRef.cqrs_delete({"id": 1}))
    return {
        "save": save,
        "sync": sync,
        "delete": delete,
        "direct_save": direct_save,
        "direct_delete": direct_delete,
        "rows": NoDbRef.objects.count(),
    }
