"""Hand payloads of master events to the transport.

Batched through ``produce_many`` where the transport batches (RabbitMQ, kombu); otherwise each
payload goes through ``dj_cqrs.controller.producer.produce`` on its own, as django-cqrs publishes
(tests patch it there). A failure raises ``PublishFailed``. Payloads are built by
:mod:`dj_cqrs.master.payloads`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

from dj_cqrs.core.event import AnyPayload
from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.log import payload_context
from dj_cqrs.metrics import recorder
from dj_cqrs.transport import get_transport

logger = logging.getLogger("django-cqrs.master")


#: django-cqrs's producer entry point; tests patch ``produce`` there to see each published event.
PRODUCER_MODULE = "dj_cqrs.controller.producer"


def _controller_produce() -> Any:
    """``dj_cqrs.controller.producer.produce`` as it is now (patched or not), if imported.

    Looked up in ``sys.modules`` rather than imported: a module nobody imported cannot have been
    patched, and the master layer does not depend on the compatibility layer."""
    module = sys.modules.get(PRODUCER_MODULE)
    return None if module is None else getattr(module, "produce", None)


def produce_is_patched() -> bool:
    produce = _controller_produce()
    return produce is not None and getattr(produce, "dj_cqrs_native", None) is not True


def publishes_in_batches(transport: Any) -> bool:
    """Whether committed events go to ``transport.produce_many`` in batches; otherwise each goes
    through ``dj_cqrs.controller.producer.produce`` on its own, as django-cqrs publishes."""
    check = getattr(transport, "publishes_in_batches", None)
    return bool(check is not None and check()) and not produce_is_patched()


def _guarded(send: Any, payloads: list[AnyPayload]) -> None:
    try:
        send()
    except PublishFailed:
        raise
    except Exception as exc:  # a custom transport's own error: never dropped silently
        for payload in payloads:
            logger.error("CQRS publish failed", extra=payload_context(payload))
        raise PublishFailed(f"publishing {len(payloads)} CQRS message(s) failed: {exc}") from exc


def send(payload: AnyPayload) -> None:
    """Hand one payload to the configured transport; raise ``PublishFailed`` on failure."""
    transport = get_transport()
    _guarded(lambda: transport.produce(payload), [payload])


def publish(payloads: Iterable[AnyPayload], fail_fast: bool = False) -> None:
    """Publish payloads in order; raise ``PublishFailed`` on failure.

    Batched through ``produce_many`` where the transport batches (RabbitMQ, kombu), else one by
    one through ``dj_cqrs.controller.producer.produce`` (see :func:`publishes_in_batches`).
    ``fail_fast``: one attempt, no retries or sleeps, where the transport supports it."""
    payloads = list(payloads)
    if not payloads:
        return
    metrics = recorder()
    try:
        _publish(payloads, fail_fast)
    except BaseException:
        metrics.publish_failed(payloads)
        raise
    metrics.published(payloads)


def _publish(payloads: list[AnyPayload], fail_fast: bool) -> None:
    transport = get_transport()
    if publishes_in_batches(transport):
        if fail_fast and getattr(transport, "supports_fail_fast", False):
            batching: Any = transport
            _guarded(lambda: batching.produce_many(payloads, fail_fast=True), payloads)
        else:
            _guarded(lambda: transport.produce_many(payloads), payloads)
        return
    produce = _controller_produce() or send
    for payload in payloads:
        _guarded(lambda: produce(payload), [payload])  # noqa: B023 - called at once
