"""Database outages: which errors mean "the database cannot be used right now", and waiting them out.

An outage is not a property of the data being written: a restart, a failover, a database that
refuses connections (``ALTER DATABASE ... ALLOW_CONNECTIONS false``), a full connection table or a
backend terminated by an administrator. Work that meets one is held and tried again, with back-off,
until the database is back; it never uses up a message's retries and is never dead-lettered.

:func:`is_outage` is the one classification every part of dj_cqrs uses (the consumer, the batched
apply, ``cqrs_bulk_load``, ``cqrs_sync`` and the other sync commands, the outbox relay). An error
is an outage when, walking its ``__cause__``/``__context__`` chain, the first error that says
something definite is:

* a :class:`DatabaseUnavailable` (:func:`connect` raises it when a connection cannot be opened,
  whatever the driver said);
* a PostgreSQL error with SQLSTATE class ``08`` (connection exception), ``57P01`` (terminated by
  an administrator), ``57P02`` (crash shutdown), ``57P03`` (cannot connect now: starting up,
  shutting down, in recovery) or ``53300`` (too many connections). Any other SQLSTATE is an answer
  of a working server about the statement (``23505`` unique violation, ``22xxx`` data errors,
  ``57014`` statement timeout, ``40001`` serialization failure ...), never an outage;
* a psycopg ``OperationalError`` or ``InterfaceError`` without a SQLSTATE: libpq reports those
  without a server answer, i.e. for a connection that could not be opened (refused, not accepting
  connections, starting up, authentication failed during a restart ...) or was lost;
* a MySQL error whose number means a lost or refused connection (2002, 2003, 2006, 2013, 1040,
  1053, 1927 ...);
* otherwise (other drivers) an ``InterfaceError``, or an ``OperationalError``/``DatabaseError``
  whose message says the connection was refused, closed or lost, or an ``OperationalError``
  while one of the open connections is no longer usable.

:class:`Outage` is the state of one outage (one log line when it starts, one when it ends,
exponential back-off between attempts); :func:`call_through_outages` runs a unit of work until it
completes, waiting through outages.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from django.db import DatabaseError, connections

from dj_cqrs.core.messages import Action, InboundMessage, Outcome
from dj_cqrs.exceptions import DatabaseUnavailable, exception_chain
from dj_cqrs.process.lifecycle import Backoff, StopFlag

logger = logging.getLogger("django-cqrs.database")

T = TypeVar("T")

#: SQLSTATE codes (beside class ``08``) that mean the server cannot serve this session now.
OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})

#: MySQL/MariaDB error numbers for a refused, lost or killed connection.
MYSQL_OUTAGE_ERRNOS = frozenset({1040, 1053, 1927, 2002, 2003, 2006, 2013, 2055, 4031})

#: Message fragments of connection errors, for drivers that give no SQLSTATE or error number.
CONNECTION_ERROR_MARKERS = (
    "server closed the connection",
    "could not connect",
    "connection refused",
    "terminating connection",
    "connection already closed",
    "no connection to the server",
    "lost connection",
    "gone away",
    "connection reset",
    "the database system is",
    "not currently accepting connections",
    "too many connections",
    "too many clients",
    "connection timed out",
    "ssl syscall error",
    "could not receive data",
    "could not send data",
)

_PSYCOPG_MODULES = ("psycopg2", "psycopg")
_MYSQL_MODULES = ("MySQLdb", "pymysql", "mysql")

#: Outcome of looking at one error of a chain: True/False decide, None looks further.
_Verdict = bool | None


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means the database cannot be used right now (see the module docstring)."""
    chain = list(exception_chain(exc))
    for error in chain:
        verdict = _decisive(error)
        if verdict is not None:
            return verdict
    for error in chain:
        if _named(error, "InterfaceError"):
            return True
        if _named(error, "OperationalError", "DatabaseError") and not _named(
            error, "IntegrityError", "DataError", "ProgrammingError", "NotSupportedError"
        ):
            text = str(error).lower()
            if any(marker in text for marker in CONNECTION_ERROR_MARKERS):
                return True
    # No driver detail at all (a driver we do not know): an OperationalError while a connection
    # is broken most likely came from that connection.
    return any(_named(error, "OperationalError") for error in chain) and _some_connection_broken()


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error (psycopg2 ``pgcode``, psycopg 3 ``sqlstate``), if any."""
    code = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
    if isinstance(code, str) and code:
        return code
    if _driver(exc) == "psycopg2":
        return _psycopg2_class_codes().get(type(exc))
    return None


def _decisive(error: BaseException) -> _Verdict:
    if isinstance(error, DatabaseUnavailable):
        return True
    code = sqlstate(error)
    if code is not None:
        return code[:2] == "08" or code in OUTAGE_SQLSTATES
    driver = _driver(error)
    if driver in _PSYCOPG_MODULES:
        if _named(error, "OperationalError", "InterfaceError"):
            return True  # libpq's own error: no server answer about a statement
        return None
    if driver in _MYSQL_MODULES:
        number = error.args[0] if error.args else None
        if isinstance(number, int):
            return number in MYSQL_OUTAGE_ERRNOS
    return None



def _driver(exc: BaseException) -> str:
    return type(exc).__module__.split(".", 1)[0]


def _named(exc: BaseException, *names: str) -> bool:
    """``exc`` is an instance of a class with one of these names (Django's or any DB-API driver's)."""
    return any(klass.__name__ in names for klass in type(exc).__mro__)


@functools.cache
def _psycopg2_class_codes() -> dict[type, str]:
    """psycopg2's error classes by SQLSTATE, reversed (for an error built without its code)."""
    import psycopg2.errorcodes  # optional: the extra [postgres]
    import psycopg2.errors

    codes: dict[type, str] = {}
    for name, code in vars(psycopg2.errorcodes).items():
        if name.isupper() and isinstance(code, str) and len(code) == 5:
            try:
                codes.setdefault(psycopg2.errors.lookup(code), code)
            except KeyError:
                continue
    return codes


def _some_connection_broken() -> bool:
    for alias in connections:
        conn = connections[alias]
        if conn.connection is not None and not conn.is_usable():
            return True
    return False


def connect(using: str) -> None:
    """Open the connection of ``using`` now if it is closed; raise :class:`DatabaseUnavailable`
    when it cannot be opened (any driver error: no statement of ours was involved)."""
    conn = connections[using]
    if conn.connection is not None:
        return
    try:
        conn.ensure_connection()
    except DatabaseError as exc:
        raise DatabaseUnavailable(f"database {using!r} cannot be reached: {exc}".strip()) from exc


def close_broken(using: str | None = None) -> None:
    """Close the connection of ``using`` (every alias when None) unless a transaction is open:
    the next query opens a new one."""
    for alias in [using] if using is not None else list(connections):
        conn = connections[alias]
        if conn.in_atomic_block:
            continue
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection may fail; it is dropped anyway
            conn.connection = None


class Outage:
    """One database outage as a loop waiting through it sees it.

    :meth:`failed` logs one WARNING when the outage starts (DEBUG for every further failed
    attempt) and returns how long to wait before the next attempt (exponential back-off with
    jitter, 0.5 s doubling up to ``maximum``: a connection attempt is cheap, and the end of an
    outage is noticed within that many seconds); :meth:`recovered` logs one INFO line when it ends.
    """

    def __init__(self, what: str, *, log: logging.Logger | None = None, maximum: float = 10.0) -> None:
        #: What waits, for the log lines ("replica database", "database 'default'" ...).
        self.what = what
        self.log = log or logger
        self.backoff = Backoff(0.5, maximum)
        self.started: float | None = None
        self.attempts = 0
        #: ``time.monotonic()`` before which a new attempt is pointless.
        self.retry_at = 0.0

    @property
    def active(self) -> bool:
        return self.started is not None

    def due(self) -> bool:
        return time.monotonic() >= self.retry_at

    def failed(self, error: BaseException | str, holding: str = "") -> float:
        """Record a failed attempt (``holding`` says what waits); return the seconds to wait
        before the next one."""
        delay = self.backoff.next()
        self.attempts += 1
        now = time.monotonic()
        self.retry_at = now + delay
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        detail = " ".join(text.split())
        if self.started is None:
            self.started = now
            self.log.warning(
                "%s unavailable (%s); %swaiting for it with back-off, nothing is retried or dead-lettered meanwhile",
                self.what, detail, f"{holding}; " if holding else "",
            )
        else:
            self.log.debug("%s still unavailable (%s); next attempt in %.1fs", self.what, detail, delay)
        return delay

    def recovered(self) -> None:
        """The database answered again: log the end of the outage (once) and reset the back-off."""
        if self.started is not None:
            self.log.info(
                "%s available again after %.1fs (%s attempt(s)); resuming",
                self.what, time.monotonic() - self.started, self.attempts,
            )
        self.started = None
        self.attempts = 0
        self.retry_at = 0.0
        self.backoff.reset()


def call_through_outages(
    work: Callable[[], T],
    *,
    what: str,
    using: str | None = None,
    stop: StopFlag | None = None,
    log: logging.Logger | None = None,
) -> T:
    """Run ``work`` until it completes, waiting through database outages.

    ``work`` must be safe to run again after an outage interrupted it (one transaction, or
    idempotent steps). An outage inside a transaction opened by the caller cannot be waited out
    here (the transaction is lost): the error is raised. Any other error is raised at once. When
    ``stop`` is set while waiting, the outage's error is raised.
    """
    outage = Outage(what, log=log)
    while True:
        try:
            result = work()
        except Exception as exc:
            if not is_outage(exc) or (using is not None and connections[using].in_atomic_block):
                raise
            delay = outage.failed(exc)
            close_broken(using)
            if stop is not None:
                if stop.wait(delay):
                    raise
            else:
                time.sleep(delay)
            continue
        outage.recovered()
        return result


__all__ = [
    "CONNECTION_ERROR_MARKERS",
    "MYSQL_OUTAGE_ERRNOS",
    "OUTAGE_SQLSTATES",
    "DatabaseUnavailable",
    "Outage",
    "call_through_outages",
    "close_broken",
    "connect",
    "is_outage",
    "sqlstate",
]


def hold_through_outages(
    handle: Callable[[Sequence[InboundMessage]], list[Outcome]],
    messages: Sequence[InboundMessage],
    wait: Callable[[float], bool] | None,
    what: str,
    log: logging.Logger,
) -> list[Outcome]:
    """``handle(messages)``, then again (with back-off) for the messages that met a database
    outage (``REQUEUE``) until the database is back, however long that takes.

    ``wait(seconds)`` sleeps while the transport keeps its broker connection alive and returns True
    when the worker is asked to stop: the messages still waiting then keep their ``REQUEUE``
    outcome (the transport leaves them unacknowledged). One WARNING when the outage starts, one INFO
    when it ends. ``wait=None`` (the in-memory transport) returns the ``REQUEUE`` outcomes at once.
    """
    outcomes = handle(messages)
    waiting = [i for i, outcome in enumerate(outcomes) if outcome.action is Action.REQUEUE]
    if not waiting or wait is None:
        return outcomes
    outage = Outage(what, log=log)
    while waiting:
        first = outcomes[waiting[0]]
        delay = outage.failed(first.exception or first.detail, holding=f"{len(waiting)} message(s) held unacknowledged")
        if wait(delay):
            return outcomes
        for index, outcome in zip(waiting, handle([messages[i] for i in waiting]), strict=True):
            outcomes[index] = outcome
        waiting = [i for i in waiting if outcomes[i].action is Action.REQUEUE]
    outage.recovered()
    return outcomes
