"""Reconciliation toolset: bulk dump/load, re-sync and the diff pipelines.

The management commands (``cqrs_bulk_dump``, ``cqrs_bulk_load``, ``cqrs_sync``, ``cqrs_diff_*``,
``cqrs_deleted_*``) only parse arguments and call the functions of this package, which can be used
and tested without ``call_command``:

* :mod:`dj_cqrs.sync.keyset` pages through a table by primary key (``WHERE pk > last ORDER BY pk``);
* :mod:`dj_cqrs.sync.jsonl` reads and writes the line formats shared with django-cqrs;
* :mod:`dj_cqrs.sync.dump` / :mod:`dj_cqrs.sync.load` stream a table to and from a dump;
* :mod:`dj_cqrs.sync.resync` re-publishes master rows as SYNC messages, in batches;
* :mod:`dj_cqrs.sync.diff` compares ``(pk, revision)`` streams and repairs the differences.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("django-cqrs.sync")


def find_model(registry: Any, cqrs_id: str) -> Any:
    """The model ``registry`` holds under ``cqrs_id``, or None after logging (ERROR) the line
    django-cqrs's commands log for an unknown ``CQRS_ID``: ``No model with such CQRS_ID: X.``"""
    model = registry.get_model_by_cqrs_id(cqrs_id)
    if model is None:
        logger.error("No model with such CQRS_ID: %s.", cqrs_id)
    return model
