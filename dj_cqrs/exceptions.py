"""Exception hierarchy. Driver errors are translated into these at the transport boundary."""

from __future__ import annotations

from collections.abc import Iterator


class CqrsError(Exception):
    """Root of every exception raised by dj_cqrs."""


class ConfigurationError(CqrsError):
    """Settings or model configuration is invalid (system checks report the same problems)."""


class TransportError(CqrsError):
    """A broker operation failed."""


class ConnectionFailed(TransportError):
    """The broker could not be reached or the connection was lost."""


class PublishFailed(TransportError):
    """A message could not be published (or its publish was not confirmed) after all retries."""


class BrokerRefused(PublishFailed):
    """The broker refused the connection's credentials or permissions (authentication or
    authorisation: wrong user or password, no access to the virtual host, no permission on the
    exchange). Not transient: it is raised at once, without the publish retries.

    ``url`` is the broker URL without its password; ``reason`` says what was refused and what to
    fix. A ``PublishFailed``, so code catching that keeps working.
    """

    def __init__(self, message: str, *, url: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason


class PayloadError(CqrsError, KeyError, ValueError):
    """A received message is malformed.

    Also a ``KeyError`` (what django-cqrs's ``TransportPayload.from_message`` raised for a missing
    key) and a ``ValueError`` (what an unknown ``signal_type`` raises), so that code written against
    either keeps catching it.
    """

    def __init__(self, message: str, *, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # the message, not KeyError's repr of it


class DecodeError(PayloadError):
    """The message body is not valid JSON or not a JSON object."""


class UnknownCqrsId(PayloadError):
    """No replica model is registered for the message's ``cqrs_id``."""


class ReplicaApplyError(CqrsError):
    """Applying an event to a replica failed (the handler raised or returned a falsy value)."""


class Permanent(CqrsError):
    """Raised by a domain event handler (``dj_cqrs.events.Permanent``): the event can never be
    handled; it is dead-lettered at once (reason ``permanent``) instead of being retried."""


class DatabaseUnavailable(CqrsError):
    """A database connection could not be opened (see :mod:`dj_cqrs.database`): an outage, not bad data."""


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what caused it (``__cause__``, else ``__context__``), and so on, once each."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
