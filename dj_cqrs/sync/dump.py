"""Stream a master table to a dump: the ``CQRS_ID`` line, then one JSON object per row.

Rows are read with keyset pagination (one query per batch, through the model's
``relate_cqrs_serialization``) and serialized by the same code that builds the messages
(:func:`dj_cqrs.master.serializers.serialize`), so a dump line equals a message's ``instance_data``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from django.db import models

from dj_cqrs.master import hooks, serializers
from dj_cqrs.sync import jsonl, keyset


class Writer(Protocol):
    def write(self, text: str, /) -> Any: ...


@dataclasses.dataclass
class DumpReport:
    dumped: int = 0
    failed: int = 0


def base_queryset(model: Any) -> models.QuerySet[Any]:
    return model._default_manager.all()  # type: ignore[no-any-return]


def dump(
    model: Any,
    out: Writer,
    *,
    batch_size: int = 10000,
    queryset: models.QuerySet[Any] | None = None,
    on_error: Callable[[Any, str], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> DumpReport:
    """Write the dump of ``model`` (or of ``queryset``) to ``out``; return the counts.

    A row whose serialization raises is reported through ``on_error(pk, reason)`` and left out.
    The layout is django-cqrs's: the ``CQRS_ID``, then a newline before each row (no final one).
    """
    report = DumpReport()
    qs = base_queryset(model) if queryset is None else queryset
    out.write(model.CQRS_ID)
    for rows, pk_of, serialize in _batches(model, qs, batch_size):
        lines: list[str] = []
        for row in rows:
            try:
                lines.append(jsonl.encode(serialize(row)))
            except Exception as exc:  # noqa: BLE001 - a user serializer failing on one row
                report.failed += 1
                if on_error is not None:
                    on_error(pk_of(row), f"{type(exc).__name__}: {exc}")
        if lines:
            out.write("\n" + "\n".join(lines))
        report.dumped += len(lines)
        if on_progress is not None:
            on_progress(len(rows))
    return report


def _batches(model: Any, qs: models.QuerySet[Any], batch_size: int) -> Iterator[tuple[list[Any], Any, Any]]:
    """Batches of rows with their key and serializer functions.

    With the default serializer the rows are read as ``values_list`` tuples (no model instances,
    no signals) and serialized by :func:`~dj_cqrs.master.serializers.serialize_values`, the same
    function ``default_serialize`` applies to an instance; with ``CQRS_SERIALIZER``, or when the
    model overrides ``to_cqrs_dict``, they are model instances read through
    ``relate_cqrs_serialization`` (and serialized by that override).
    """
    if serializers.serializer_class(model) is not None or hooks.overrides(model, "to_cqrs_dict"):
        related = model.relate_cqrs_serialization(qs)
        for rows in keyset.pk_batches(related, batch_size):
            for row in rows:
                row.__dict__[serializers.FRESH_ROW_ATTR] = True
            yield rows, _instance_pk, serializers.serialize
        return
    pk_attname = model._meta.pk.attname
    names = [attname for _, attname in serializers.serialized_fields(model)] + ["cqrs_revision", "cqrs_updated"]
    columns = [pk_attname] + [name for name in names if name != pk_attname]

    def serialize(row: tuple[Any, ...]) -> dict[str, Any]:
        return serializers.serialize_values(model, dict(zip(columns, row, strict=True)))

    for rows in keyset.pk_batches(qs.values_list(*columns), batch_size):
        yield rows, _first, serialize


def _instance_pk(row: Any) -> Any:
    return row.pk


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]
