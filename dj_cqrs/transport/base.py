"""The transport interface.

A transport moves :class:`~dj_cqrs.dataclasses.TransportPayload` objects between services. It is
resolved lazily from ``CQRS['transport']`` by :func:`dj_cqrs.transport.get_transport` and used as
an instance; connection state lives on the instance (thread-local where the driver needs it).

django-cqrs custom transports implement ``produce``/``consume``/``clean_connection`` as static
methods; such classes keep working, because those are callable on an instance too.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from dj_cqrs.dataclasses import TransportPayload


class BaseTransport(abc.ABC):
    """Base class of every transport."""

    #: Driver exceptions that mean "the connection is gone, reconnect" (kombu's convention).
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: Whether the broker confirms each publish before ``produce`` returns (informational).
    supports_confirms: ClassVar[bool] = False
    #: Whether the transport can hold retries and dead letters on the broker.
    supports_dead_letters: ClassVar[bool] = False
    #: Whether the outbox may publish through it from a background thread (False for in-process
    #: transports used in tests, so that publishing stays synchronous there).
    background_publish: ClassVar[bool] = True

    @abc.abstractmethod
    def produce(self, payload: TransportPayload) -> Any:
        """Publish one payload; raise :class:`~dj_cqrs.exceptions.PublishFailed` on failure."""

    def produce_many(self, payloads: Iterable[TransportPayload]) -> None:
        """Publish several payloads; the default publishes them one by one."""
        for payload in payloads:
            self.produce(payload)

    @abc.abstractmethod
    def consume(self, *args: Any, **kwargs: Any) -> Any:
        """Run the consume loop for this replica service (blocks)."""

    def clean_connection(self, *args: Any, **kwargs: Any) -> None:  # noqa: B027 - optional hook
        """Close connections held by this transport (e.g. after a fork)."""

    def close(self) -> None:
        self.clean_connection()
