"""The transport interface.

A transport moves :class:`~dj_cqrs.dataclasses.TransportPayload` objects between services. It is
resolved lazily from ``CQRS['transport']`` by :func:`dj_cqrs.transport.get_transport` and used as
an instance; connection state lives on the instance (thread-local where the driver needs it).

django-cqrs custom transports implement ``produce``/``consume``/``clean_connection`` as static
methods; such classes keep working, because those are callable on an instance too, and a class
may implement only one side (``produce`` for a master-only service, ``consume`` for a replica).

How the outbox publishes through a transport (see :func:`dj_cqrs.master.publisher.publish`):

* in batches (``produce_many``) when the class overrides ``produce_many`` and its ``produce`` is
  the one it was defined with (a test patching ``RabbitMQTransport.produce`` sees every event);
* otherwise one event at a time through ``dj_cqrs.controller.producer.produce``, as django-cqrs
  does, so tests patching that function see each committed event;
* from a background thread only for classes that opt in with ``background_publish = True``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from dj_cqrs.dataclasses import TransportPayload


class BaseTransport:
    """Base class of every transport."""

    #: Driver exceptions that mean "the connection is gone, reconnect" (kombu's convention).
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: Whether the broker confirms each publish before ``produce`` returns (informational).
    supports_confirms: ClassVar[bool] = False
    #: Whether the transport can hold retries and dead letters on the broker.
    supports_dead_letters: ClassVar[bool] = False
    #: Whether the outbox may publish through it from a background thread, so ``save()`` does not
    #: wait for the broker. Off unless a transport opts in (its ``produce_many`` must then be
    #: thread-safe); the RabbitMQ and kombu transports do.
    background_publish: ClassVar[bool] = False
    #: ``produce`` and ``produce_many`` as the class defined them (set for every subclass), to tell
    #: a patched method from the transport's own.
    _defined_produce: ClassVar[Callable[..., Any] | None] = None
    _defined_produce_many: ClassVar[Callable[..., Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._defined_produce = cls.produce
        cls._defined_produce_many = cls.produce_many

    def produce(self, payload: TransportPayload) -> Any:
        """Publish one payload; raise :class:`~dj_cqrs.exceptions.PublishFailed` on failure."""
        raise NotImplementedError(f"{type(self).__qualname__} cannot publish: it implements no produce()")

    def produce_many(self, payloads: Iterable[TransportPayload]) -> None:
        """Publish several payloads; the default publishes them one by one."""
        for payload in payloads:
            self.produce(payload)

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        """Run the consume loop for this replica service (blocks)."""
        raise NotImplementedError(f"{type(self).__qualname__} cannot consume: it implements no consume()")

    def publishes_in_batches(self) -> bool:
        """Whether the outbox may hand this transport whole batches (``produce_many``): the class
        implements ``produce_many`` itself, and neither method was replaced after the class was
        defined (a test's ``mock.patch``) on the class or on this instance."""
        cls = type(self)
        return (
            cls.produce_many is not BaseTransport.produce_many
            and cls.produce == cls._defined_produce
            and cls.produce_many == cls._defined_produce_many
            and "produce" not in vars(self)
            and "produce_many" not in vars(self)
        )

    def clean_connection(self, *args: Any, **kwargs: Any) -> None:  # noqa: B027 - optional hook
        """Close connections held by this transport (e.g. after a fork)."""

    def close(self) -> None:
        self.clean_connection()
