"""docs/scaling.md against the code: the quorum delivery limit it quotes, and the migration steps
that every queue declared with ``queue_type`` needs (the dead-letter queue included)."""

from __future__ import annotations

import re
from pathlib import Path

from dj_cqrs.transport.rabbit_topology import (
    QUORUM_DELIVERY_LIMIT,
    queue_type_arguments,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_delivery_limit_quoted_is_the_one_declared() -> None:
    quoted = [
        int(number)
        for page in DOCS.glob("*.md")
        for number in re.findall(r"x-delivery-limit`?:?\s*`?\(?(\d+)", page.read_text())
    ]
    assert quoted, "docs/scaling.md quotes the delivery limit"
    assert set(quoted) == {QUORUM_DELIVERY_LIMIT}, quoted


def test_the_migration_replaces_the_dead_letter_queue_when_the_queue_type_changes() -> None:
    # The dead-letter queue is declared with the queue type, so a migration that leaves it stops
    # the new consumer with dj_cqrs.E101 (seen on RabbitMQ 3.10 following the page before).
    assert queue_type_arguments("quorum") == {"x-queue-type": "quorum"}
    section = _section((DOCS / "scaling.md").read_text(), "Migrating an existing queue")
    assert "dead_letter_<queue>" in section
    assert '"src-queue": "dead_letter_<queue>"' in section
    assert '"dest-queue": "dead_letter_<queue>"' in section
