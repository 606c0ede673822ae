"""Read-your-writes, master side: the ``cqrs_revision`` of a change, once it is committed.

* :func:`last_revision` - the revision a saved instance has (the one its event carries, and a
  replica stores once it applied it);
* :func:`recording` - a context (a request, a task) that collects the revision of every change
  whose transaction committed inside it, as :class:`Revision` values with a :meth:`~Revision.token`
  (``<cqrs_id>:<pk>:<revision>``) to hand to the client, e.g. in an ``X-CQRS-Revision`` header
  (:mod:`dj_cqrs.ops.read_your_writes`). A change rolled back is never recorded.

A replica waits for a token with :func:`dj_cqrs.replica.wait_for`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dj_cqrs.constants import SignalType

if TYPE_CHECKING:
    from dj_cqrs.master.pending import PendingEvent


@dataclasses.dataclass(frozen=True)
class Revision:
    """A committed change: the object and the revision replicas store once they applied it."""

    cqrs_id: str
    pk: str
    revision: int
    deleted: bool = False

    def token(self) -> str:
        return f"{self.cqrs_id}:{self.pk}:{self.revision}"


_recorded: contextvars.ContextVar[list[Revision] | None] = contextvars.ContextVar(
    "dj_cqrs_committed", default=None
)


def last_revision(instance: Any) -> int:
    """The ``cqrs_revision`` of a saved master instance (read back if the save left an
    expression or deferred it, e.g. with database triggers)."""
    value = instance.__dict__.get("cqrs_revision")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    stored = (
        type(instance)
        ._base_manager.using(instance._state.db)
        .filter(pk=instance.pk)
        .values_list("cqrs_revision", flat=True)
        .get()
    )
    instance.__dict__["cqrs_revision"] = stored
    return int(stored)


def token_for(instance: Any) -> str:
    """``<cqrs_id>:<pk>:<revision>`` of a saved master instance."""
    return Revision(type(instance).CQRS_ID, str(instance.pk), last_revision(instance)).token()


@contextlib.contextmanager
def recording() -> Iterator[list[Revision]]:
    """Collect the revisions committed inside the block (in commit order) into the list yielded."""
    found: list[Revision] = []
    reset = _recorded.set(found)
    try:
        yield found
    finally:
        _recorded.reset(reset)


def note(events: list[PendingEvent]) -> None:
    """Commit hook (:func:`dj_cqrs.master.dispatch.publish_committed`): record the committed events
    when a :func:`recording` is active."""
    found = _recorded.get()
    if found is None:
        return
    for event in events:
        if event.silent or event.signal is SignalType.SYNC:
            continue
        revision = _revision(event)
        if revision is not None:
            found.append(
                Revision(event.cqrs_id, str(event.pk), revision, event.signal is SignalType.DELETE)
            )


def _revision(event: PendingEvent) -> int | None:
    if event.signal is SignalType.DELETE:
        value = (event.instance_data or {}).get("cqrs_revision")
    else:
        value = event.instance.__dict__.get("cqrs_revision") if event.instance is not None else None
        if not isinstance(value, int):
            value = event.revision
    return value if isinstance(value, int) and not isinstance(value, bool) else None


__all__ = ["Revision", "last_revision", "note", "recording", "token_for"]
