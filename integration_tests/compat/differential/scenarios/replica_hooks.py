"""What replica overrides and ``RawReplicaMixin`` handlers receive (issue 10, gaps 2 and 3)."""

from __future__ import annotations

from typing import Any

from dreplica import models as replica
from dreplica.models import BookOverride, BookRef, BookSuper

from dj_cqrs.controller.consumer import consume
from dj_cqrs.dataclasses import TransportPayload
from scenarios._base import documented, norm, outcome

UPDATED = "2024-01-02T03:04:05+00:00"


def _book(revision: int, title: str = "t", author: Any = 5, **extra: Any) -> dict[str, Any]:
    return {"id": 1, "title": title, "author": author, "cqrs_revision": revision, "cqrs_updated": UPDATED, **extra}


def _send(signal: str, cqrs_id: str, data: dict[str, Any], previous: Any = None, meta: Any = None) -> Any:
    return outcome(lambda: consume(TransportPayload(signal, cqrs_id, data, data.get("id"), previous_data=previous, meta=meta)))


def _seen() -> list[Any]:
    seen = norm(list(replica.SEEN))
    replica.SEEN.clear()
    return seen  # type: ignore[no-any-return]


def _returned(result: dict[str, Any]) -> dict[str, Any]:
    """A model instance is compared by its class, not its repr."""
    value = result.get("returned")
    if isinstance(value, str) and value.startswith("<"):
        return {"returned": value.split(":")[0] + ">"}
    return result


def check_override_create_and_update_read_master_keys() -> Any:
    replica.SEEN.clear()
    created = _returned(_send("SAVE", "diff_book_override", _book(0), previous={}))
    updated = _returned(_send("SAVE", "diff_book_override", _book(1, title="u", author=6), previous={"title": "t"}))
    synced = _returned(_send("SYNC", "diff_book_override", _book(1, title="s", author=7)))
    row = BookOverride.objects.values("title", "author_id", "cqrs_revision").get(pk=1)
    return {"created": created, "updated": updated, "synced": synced, "seen": _seen(), "row": row}


def check_override_calling_super_gets_master_keys() -> Any:
    replica.SEEN.clear()
    created = _returned(_send("SAVE", "diff_book_super", {"id": 1, "title": "t", "cqrs_revision": 0, "cqrs_updated": UPDATED}))
    updated = _returned(
        _send("SAVE", "diff_book_super", {"id": 1, "title": "u", "cqrs_revision": 1, "cqrs_updated": UPDATED})
    )
    return {"created": created, "updated": updated, "seen": _seen(), "row": BookSuper.objects.values("title").get(pk=1)}


def check_override_mapped_previous_data() -> Any:
    replica.SEEN.clear()
    _send("SAVE", "diff_book_override", _book(0), previous=None)
    _send("SAVE", "diff_book_override", _book(1), previous={})
    _send("SAVE", "diff_book_override", _book(2), previous={"title": "old", "unknown": 1})
    return _seen()


@documented("The default `cqrs_create`/`cqrs_update` pass a foreign key under the field's name")
def check_default_replica_fk_under_field_name() -> Any:
    """A master sends a ForeignKey under the field's name (``author``)."""
    created = _returned(_send("SAVE", "diff_book", _book(0, price=1)))
    rows = list(BookRef.objects.values("id", "author_id"))
    return {"created": created, "rows": rows}


def check_handler_kwargs_save_sync_delete() -> Any:
    replica.SEEN.clear()
    results = [
        _send("SAVE", "diff_kwargs_handler", {"id": 1}, previous={"a": 1}),
        _send("SYNC", "diff_kwargs_handler", {"id": 1}),
        _send("DELETE", "diff_kwargs_handler", {"id": 1, "cqrs_revision": 1, "cqrs_updated": UPDATED}),
    ]
    return {"results": results, "seen": _seen()}


def check_handler_without_sync() -> Any:
    replica.SEEN.clear()
    results = [
        _send("SAVE", "diff_nosync_handler", {"id": 1}, previous={"a": 1}),
        _send("SYNC", "diff_nosync_handler", {"id": 1}),
        _send("DELETE", "diff_nosync_handler", {"id": 1}),
    ]
    return {"results": results, "seen": _seen()}


def check_handler_with_meta() -> Any:
    replica.SEEN.clear()
    results = [
        _send("SAVE", "diff_meta_handler", {"id": 1}, meta={"m": 1}),
        _send("SYNC", "diff_meta_handler", {"id": 1}, meta={"m": 2}),
        _send("DELETE", "diff_meta_handler", {"id": 1}, meta=None),
    ]
    return {"results": results, "seen": _seen()}
