"""The pull cursor: where a pull of one CQRS_ID stands, opaque to clients.

On the wire it is the URL-safe base64 (no padding) of a compact JSON object::

    {"v": 1, "c": "<cqrs_id>", "p": "s" | "f", "h": <head>, "k": <last pk>, "f": <position>, "t": <since>}

* ``p = "s"`` (snapshot): every current row with a key greater than ``k`` (``null``: from the
  first) is still to be served, then the change feed from ``h``, the feed head taken *before*
  the snapshot started, so that no change made while the snapshot is read is missed;
* ``p = "f"`` (feed): the change feed after position ``f``;
* ``t``: a Unix time before which no outbox row the next read needs was published, so that the
  cursor can be told apart from one the outbox retention has outrun (410).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from typing import Any

VERSION = 1
SNAPSHOT = "s"
FEED = "f"


class BadCursor(ValueError):
    """The cursor is malformed, of another version, or of another CQRS_ID."""


@dataclasses.dataclass(frozen=True, slots=True)
class Cursor:
    cqrs_id: str
    phase: str
    #: The feed head taken before the snapshot started (snapshot phase).
    head: int
    #: The last primary key served by the snapshot, as a JSON value (None: none yet).
    last_pk: Any
    #: The feed position (feed phase).
    position: int
    since: float

    def encode(self) -> str:
        data = {
            "v": VERSION,
            "c": self.cqrs_id,
            "p": self.phase,
            "h": self.head,
            "k": self.last_pk,
            "f": self.position,
            "t": round(self.since, 3),
        }
        raw = json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(text: str, cqrs_id: str) -> Cursor:
    """The cursor ``text`` stands for; :class:`BadCursor` when it is not one of ``cqrs_id``'s."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursor("the cursor is not one this server issued") from None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise BadCursor("the cursor is not one this server issued (or of another version)")
    if data.get("c") != cqrs_id:
        raise BadCursor(f"the cursor belongs to another cqrs_id ({data.get('c')!r})")
    phase, head, position, since = data.get("p"), data.get("h"), data.get("f"), data.get("t")
    if (
        phase not in (SNAPSHOT, FEED)
        or type(head) is not int
        or type(position) is not int
        or head < 0
        or position < 0
        or not isinstance(since, (int, float))
    ):
        raise BadCursor("the cursor is damaged")
    last_pk = data.get("k")
    if last_pk is not None and not isinstance(last_pk, (str, int, float)):
        raise BadCursor("the cursor is damaged")
    return Cursor(cqrs_id, phase, head, last_pk, position, float(since))


__all__ = ["FEED", "SNAPSHOT", "VERSION", "BadCursor", "Cursor", "decode"]
