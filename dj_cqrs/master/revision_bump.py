"""The expression that bumps a row's ``cqrs_revision`` in the UPDATE of a save.

``F("cqrs_revision") + 1`` says the same, but Django copies and resolves that expression tree on
every save; this one has nothing to resolve: it compiles to ``<table>.<column> + 1`` directly.
"""

from __future__ import annotations

from typing import Any

from django.db import models


class RevisionBump(models.Expression):
    """``<table>.cqrs_revision + 1`` for the row being updated."""

    output_field = models.IntegerField()

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def resolve_expression(self, *args: Any, **kwargs: Any) -> RevisionBump:
        return self

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        qn = connection.ops.quote_name
        opts = self.model._meta
        return f"({qn(opts.db_table)}.{qn(opts.get_field('cqrs_revision').column)} + 1)", []

    def __repr__(self) -> str:
        return "RevisionBump()"
