"""Diff logic over ``(pk, revision)`` batches, for any primary key name and type.

Primary keys travel as JSON (UUIDs and dates as text); both sides compare them after the model's
primary-key field has converted them (``to_python``), so ``"0b0c...-..."`` and ``UUID('0b0c...')``
are the same key, and the output repeats the key exactly as it was received. Every function reads
a batch of keys with one query (chunked only by the database's parameter limit).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connections, models, router

from dj_cqrs.database import call_through_outages
from dj_cqrs.master import hooks
from dj_cqrs.sync import jsonl, keyset


class BadKey(ValueError):
    """A primary key of the stream is not valid for the model."""


def normalize_pk(model: Any, value: Any) -> Any:
    """The Python value of a streamed primary key; raise :class:`BadKey`."""
    if isinstance(value, (list, dict)) or value is None:
        raise BadKey(f"invalid primary key {value!r}")
    try:
        return model._meta.pk.to_python(value)
    except (ValidationError, ValueError, TypeError) as exc:
        raise BadKey(f"invalid primary key {value!r} for {model._meta.pk.name}") from exc


def revisions_differ(master: dict[Any, Any], replica: dict[Any, Any]) -> list[Any]:
    """Keys of ``master`` (``{key: revision}``) missing from ``replica`` or with another revision.

    Pure function; keys keep the order of ``master``.
    """
    return [key for key, revision in master.items() if replica.get(key, _MISSING) != revision]


_MISSING = object()


def _chunk_size(model: Any) -> int:
    limit = connections[router.db_for_read(model)].features.max_query_params
    return int(limit) if limit else 10000


def _lookup(model: Any, keys: Sequence[Any], *fields: str) -> list[Any]:
    """``values_list("pk", ...)`` of the rows with these keys.

    Integer keys that are dense (as ``cqrs_diff_master`` batches usually are) are read with one
    range query (``pk BETWEEN min AND max``) instead of a long ``IN`` list; otherwise one query
    per parameter-limit chunk.
    """
    result: list[Any] = []
    manager = model._default_manager
    if keys and all(type(key) is int for key in keys):
        low, high = min(keys), max(keys)
        if high - low < 2 * len(keys):
            wanted = set(keys)
            qs = manager.filter(pk__gte=low, pk__lte=high).values_list(*fields)
            return [row for row in keyset.fetch_with_reconnect(keyset.lister(qs), qs.db) if row[0] in wanted]
    size = _chunk_size(model)
    for start in range(0, len(keys), size):
        chunk = list(keys[start : start + size])
        qs = manager.filter(pk__in=chunk).values_list(*fields)
        result.extend(keyset.fetch_with_reconnect(keyset.lister(qs), qs.db))
    return result


# -- master side ----------------------------------------------------------------------------------


def _default_is_sync_instance(model: Any) -> bool:
    return not hooks.overridden(model, "is_sync_instance")


def master_pairs(model: Any, queryset: models.QuerySet[Any], batch_size: int) -> Iterator[list[list[Any]]]:
    """``[[pk, revision], ...]`` per batch of master rows, only rows where ``is_sync_instance()``.

    Reads only the two columns, unless the model overrides ``is_sync_instance`` (then whole rows,
    still one query per batch).
    """
    if _default_is_sync_instance(model):
        values = queryset.values_list("pk", "cqrs_revision")
        for rows in keyset.pk_batches(values, batch_size):
            yield [[jsonl.json_pk(pk), revision] for pk, revision in rows]
    else:
        for rows in keyset.pk_batches(queryset, batch_size):
            yield [[jsonl.json_pk(row.pk), row.cqrs_revision] for row in rows if row.is_sync_instance()]


def missing_on_master(model: Any, keys: Sequence[Any]) -> list[Any]:
    """Those of ``keys`` (streamed form) that no longer exist on the master. Raises :class:`BadKey`."""
    normalized = {normalize_pk(model, key): key for key in keys}
    found = {pk for (pk,) in _lookup(model, list(normalized), "pk")}
    return [key for pk, key in normalized.items() if pk not in found]


# -- replica side ---------------------------------------------------------------------------------


def replica_differences(model: Any, pairs: Iterable[Any]) -> list[Any]:
    """Master keys (as streamed) whose replica row is missing or has another revision.

    ``pairs`` is a batch as ``cqrs_diff_master`` writes it: ``[[pk, revision], ...]`` (a JSON
    object ``{pk: revision}`` is accepted too). Raises :class:`BadKey`.
    """
    items = pairs.items() if isinstance(pairs, dict) else pairs
    master: dict[Any, Any] = {}
    streamed: dict[Any, Any] = {}
    for item in items:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise BadKey(f"expected [pk, revision], got {item!r}")
        key, revision = item
        pk = normalize_pk(model, key)
        master[pk] = revision
        streamed[pk] = key
    replica = dict(_lookup(model, list(master), "pk", "cqrs_revision"))
    return [streamed[pk] for pk in revisions_differ(master, replica)]


def replica_keys(model: Any, queryset: models.QuerySet[Any], batch_size: int) -> Iterator[list[Any]]:
    """Primary keys of the replica, one list per batch (``cqrs_deleted_diff_replica``)."""
    for rows in keyset.pk_batches(queryset.values_list("pk"), batch_size):
        yield [jsonl.json_pk(pk) for (pk,) in rows]


def delete_on_replica(model: Any, keys: Sequence[Any]) -> int:
    """Delete the replica rows with these keys (streamed form); return how many rows went."""
    normalized = [normalize_pk(model, key) for key in keys]
    deleted = 0
    size = _chunk_size(model)
    using = router.db_for_write(model)
    manager = model._base_manager.using(using)
    for start in range(0, len(normalized), size):
        chunk = manager.filter(pk__in=normalized[start : start + size])
        # one transaction per chunk: run again in full once the database is back from an outage
        count, per_model = call_through_outages(chunk.delete, what=f"database {using!r}", using=using, log=keyset.logger)
        deleted += int(per_model.get(model._meta.label, count))
    return deleted
