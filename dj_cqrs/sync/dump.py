"""Stream a master table to a dump: the ``CQRS_ID`` line, then one JSON object per row.

Rows are read with keyset pagination (one query per batch, through the model's
``relate_cqrs_serialization``) and serialized by the same code that builds the messages
(:func:`dj_cqrs.master.publisher.serialize`), so a dump line equals a message's ``instance_data``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

from django.db import models

from dj_cqrs.master import publisher
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
    """
    report = DumpReport()
    qs = model.relate_cqrs_serialization(base_queryset(model) if queryset is None else queryset)
    out.write(f"{model.CQRS_ID}\n")
    for rows in keyset.pk_batches(qs, batch_size):
        lines: list[str] = []
        for row in rows:
            try:
                lines.append(jsonl.encode(publisher.serialize(row)))
            except Exception as exc:  # noqa: BLE001 - a user serializer failing on one row
                report.failed += 1
                if on_error is not None:
                    on_error(row.pk, f"{type(exc).__name__}: {exc}")
        if lines:
            out.write("\n".join(lines) + "\n")
        report.dumped += len(lines)
        if on_progress is not None:
            on_progress(len(rows))
    return report
