"""Functions named by dotted path in the test settings (``meta_function``, ``correlation_function``)."""

from __future__ import annotations

from typing import Any

calls: list[dict[str, Any]] = []


def meta_function(**kwargs: Any) -> dict[str, Any]:
    calls.append(kwargs)
    return {"from": "dotted path", "signal": str(kwargs["signal_type"])}


def correlation_function(signal_type: Any, cqrs_id: str, instance_pk: Any, queue: str | None) -> str:
    return f"{signal_type}:{cqrs_id}:{instance_pk}:{queue}"


not_callable = 42
