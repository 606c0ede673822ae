"""The transport interface.

A transport moves :class:`~dj_cqrs.dataclasses.TransportPayload` objects between services. It is
resolved lazily from ``CQRS['transport']`` by :func:`dj_cqrs.transport.get_transport` and used as
an instance; connection state lives on the instance (thread-local where the driver needs it).

django-cqrs custom transports implement ``produce``/``consume``/``clean_connection`` as static
methods; such classes keep working, because those are callable on an instance too, and a class
may implement only one side (``produce`` for a master-only service, ``consume`` for a replica).

django-cqrs's own transports were used through their class (classmethods), e.g.
``RabbitMQTransport.clean_connection()`` in a gunicorn ``post_fork`` or celery
``worker_process_init`` hook. The methods marked :func:`every_instance` or
:func:`~dj_cqrs.transport.resolution.through_instance` keep that working: called on the class,
they act on this process's instance(s) of the class.

How the outbox publishes through a transport (see :func:`dj_cqrs.master.publisher.publish`):

* in batches (``produce_many``) when the class overrides ``produce_many`` and its ``produce`` is
  the one it was defined with (a test patching ``RabbitMQTransport.produce`` sees every event);
* otherwise one event at a time through ``dj_cqrs.controller.producer.produce``, as django-cqrs
  does, so tests patching that function see each committed event;
* from a background thread only for classes that opt in with ``background_publish = True``.
"""

from __future__ import annotations

import threading
import types
import weakref
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol, TypeVar, cast

from dj_cqrs.core.event import AnyPayload

_F = TypeVar("_F", bound=Callable[..., Any])

_instances_lock = threading.Lock()
#: Every transport instance alive in this process (weakly held), for the class-level calls.
_instances: weakref.WeakValueDictionary[int, BaseTransport] = weakref.WeakValueDictionary()


def live_instances(cls: type[BaseTransport]) -> list[BaseTransport]:
    """The transport instances of ``cls`` (subclasses included) alive in this process."""
    with _instances_lock:
        found = list(_instances.values())
    return [transport for transport in found if isinstance(transport, cls)]


class ClassCallable:
    """A transport method callable on an instance (a normal method) and on the class, as
    django-cqrs's classmethods were. On the class it runs on the instances ``targets(cls)``
    returns: every live instance of the class (:func:`every_instance`, e.g. ``clean_connection``)
    or the process's instance of it (:func:`dj_cqrs.transport.resolution.through_instance`, e.g.
    ``produce``, whose result it returns)."""

    def __init__(self, func: Callable[..., Any], targets: Callable[[type[BaseTransport]], list[BaseTransport]], each: bool) -> None:
        self.__func__ = func
        self.each = each
        self.name = func.__name__
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__
        self.__qualname__ = func.__qualname__
        self.__wrapped__ = func

        def on_class(cls: type[BaseTransport], *args: Any, **kwargs: Any) -> Any:
            results = [getattr(transport, self.name)(*args, **kwargs) for transport in targets(cls)]
            return None if self.each else results[0]

        # One function for every class-level access, so that ``Cls.method == Cls.method`` holds
        # (``BaseTransport.publishes_in_batches`` compares them).
        self._on_class = on_class

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Callable[..., Any]:
        if obj is None:
            assert owner is not None
            return types.MethodType(self._on_class, owner)
        return types.MethodType(self.__func__, obj)


def every_instance(func: _F) -> _F:
    """Mark a method that, called on the transport class, runs on each live instance of it."""
    return cast(_F, ClassCallable(func, live_instances, each=True))


class BaseTransport:
    """Base class of every transport."""

    #: django-cqrs's class attribute, kept for code that reads it (unused here).
    consumers: ClassVar[dict[Any, Any]] = {}

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
    #: Whether ``produce_many`` accepts ``fail_fast=True``: one attempt, no retry, no sleep, a
    #: ``PublishFailed`` at the first failure (the RabbitMQ and kombu transports do). Check it
    #: before passing the keyword: other transports' ``produce_many`` do not take it.
    supports_fail_fast: ClassVar[bool] = False
    #: ``produce`` and ``produce_many`` as the class defined them (set for every subclass), to tell
    #: a patched method from the transport's own.
    _defined_produce: ClassVar[Callable[..., Any] | None] = None
    _defined_produce_many: ClassVar[Callable[..., Any] | None] = None

    def __new__(cls, *args: Any, **kwargs: Any) -> BaseTransport:
        instance = super().__new__(cls)
        try:
            with _instances_lock:
                _instances[id(instance)] = instance
        except TypeError:  # pragma: no cover - a subclass with __slots__ and no __weakref__
            pass
        return instance

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._defined_produce = cls.produce
        cls._defined_produce_many = cls.produce_many

    def produce(self, payload: AnyPayload) -> Any:
        """Publish one payload; raise :class:`~dj_cqrs.exceptions.PublishFailed` on failure."""
        raise NotImplementedError(f"{type(self).__qualname__} cannot publish: it implements no produce()")

    def produce_many(self, payloads: Iterable[AnyPayload]) -> None:
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

    @every_instance
    def clean_connection(self, *args: Any, **kwargs: Any) -> None:  # noqa: B027 - optional hook
        """Close connections held by this transport (e.g. after a fork). A no-op here
        (django-cqrs's base raises ``NotImplementedError``). Called on a class, e.g.
        ``RabbitMQTransport.clean_connection()``, it runs on each instance of that class alive
        in this process."""

    def close(self) -> None:
        self.clean_connection()


class FailFastProducer(Protocol):
    """A transport whose ``produce_many`` takes ``fail_fast`` (``supports_fail_fast`` is True)."""

    def produce_many(self, payloads: Iterable[AnyPayload], *, fail_fast: bool = False) -> None: ...


def fail_fast_producer(transport: Any) -> FailFastProducer | None:
    """``transport`` typed as a :class:`FailFastProducer` when it supports ``fail_fast=True``
    (one attempt, no retry, no sleep, ``PublishFailed`` at the first failure), else None."""
    return cast(FailFastProducer, transport) if getattr(transport, "supports_fail_fast", False) else None
