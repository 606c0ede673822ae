"""The one settings object: ``cqrs_settings`` reads ``settings.CQRS`` lazily and never mutates it.

Every key has a default here and a section in ``docs/settings.md``. Invalid values are reported by
the system checks in :mod:`dj_cqrs.checks` (ids ``dj_cqrs.E0xx``); reading an invalid value at run
time raises :class:`~dj_cqrs.exceptions.ConfigurationError` carrying the same id.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from dj_cqrs import constants
from dj_cqrs.core.broker_urls import broker_urls, is_url_value, url_scheme
from dj_cqrs.core.names import dead_letter_queue_name
from dj_cqrs.exceptions import ConfigurationError

_MISSING: Any = object()

TRANSPORT_ALIASES: dict[str, str] = {
    "rabbitmq": "dj_cqrs.transport.rabbit_mq.RabbitMQTransport",
    "kombu": "dj_cqrs.transport.kombu.KombuTransport",
    "memory": "dj_cqrs.transport.memory.MemoryTransport",
    "mock": "dj_cqrs.transport.mock.TransportMock",
    # django-cqrs exports these from dj_cqrs.transport
    "dj_cqrs.transport.RabbitMQTransport": "dj_cqrs.transport.rabbit_mq.RabbitMQTransport",
    "dj_cqrs.transport.KombuTransport": "dj_cqrs.transport.kombu.KombuTransport",
}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One configuration problem, as reported by a system check."""

    id: str
    msg: str
    hint: str
    warning: bool = False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Option:
    """A documented option with its default and validator."""

    default: Any
    check: Callable[[Any], bool] | None = None
    expect: str = ""


def _non_negative_int_or_none(v: Any) -> bool:
    return v is None or (_is_int(v) and v >= 0)


def _positive_int_or_none(v: Any) -> bool:
    return v is None or (_is_int(v) and v > 0)


def _non_negative_number(v: Any) -> bool:
    return _is_number(v) and v >= 0


def _positive_int(v: Any) -> bool:
    return _is_int(v) and v > 0


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _str_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, str) and bool(v))


def _callable_or_path_or_none(v: Any) -> bool:
    return v is None or callable(v) or (isinstance(v, str) and "." in v)


def _str_keyed_dict_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, dict) and all(isinstance(k, str) for k in v))


MASTER_OPTIONS: dict[str, Option] = {
    "CQRS_AUTO_UPDATE_FIELDS": Option(constants.DEFAULT_MASTER_AUTO_UPDATE_FIELDS, _bool, "a bool"),
    "CQRS_MESSAGE_TTL": Option(
        constants.DEFAULT_MASTER_MESSAGE_TTL, _positive_int_or_none, "an int >= 1 (seconds) or None"
    ),
    "correlation_function": Option(None, _callable_or_path_or_none, "a callable or dotted path"),
    "meta_function": Option(None, _callable_or_path_or_none, "a callable or dotted path"),
    # dj_cqrs additions
    "publish_retries": Option(3, lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "publish_retry_delay": Option(0.2, _non_negative_number, "a number >= 0 (seconds)"),
    "confirm_timeout": Option(10, lambda v: _is_number(v) and v > 0, "a number > 0 (seconds)"),
    "CQRS_OUTBOX": Option(True, _bool, "a bool"),
    "outbox_publish": Option(
        "thread", lambda v: v in ("thread", "sync", "relay"), "'thread', 'sync' or 'relay'"
    ),
    "outbox_batch_size": Option(500, _positive_int, "an int > 0"),
    "outbox_retention": Option(
        86400, _non_negative_int_or_none, "an int >= 0 (seconds) or None (keep)"
    ),
    "outbox_alert_age": Option(300, _positive_int_or_none, "an int > 0 (seconds) or None"),
    "outbox_grace": Option(2, _non_negative_number, "a number >= 0 (seconds)"),
    "outbox_sweep_interval": Option(5, _non_negative_number, "a number >= 0 (seconds)"),
    "outbox_sweep_limit": Option(200, lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "prepared_statements": Option(True, _bool, "a bool"),
}

#: The most partition queues of one replica service (``replica.partitions``).
MAX_PARTITIONS = 1024
#: RabbitMQ queue types of ``replica.queue_type``.
QUEUE_TYPES = ("classic", "quorum")

REPLICA_OPTIONS: dict[str, Option] = {
    "CQRS_MAX_RETRIES": Option(
        constants.DEFAULT_REPLICA_MAX_RETRIES, _non_negative_int_or_none, "an int >= 0 or None"
    ),
    "CQRS_RETRY_DELAY": Option(
        constants.DEFAULT_REPLICA_RETRY_DELAY, _non_negative_number, "a number >= 0 (seconds)"
    ),
    # The most retries a worker holds in memory while they wait (kombu transport; None: no bound).
    # The RabbitMQ transport holds none: retries wait in the broker's TTL queues.
    "delay_queue_max_size": Option(
        constants.DEFAULT_REPLICA_DELAY_QUEUE_MAX_SIZE, _positive_int_or_none, "an int > 0 or None"
    ),
    "dead_letter_queue": Option(None, _str_or_none, "a non-empty string"),
    "dead_message_ttl": Option(
        constants.DEFAULT_DEAD_MESSAGE_TTL, _positive_int_or_none, "an int > 0 (seconds) or None"
    ),
    "CQRS_QUERY_TIMEOUT": Option(0, lambda v: _is_int(v) and v >= 0, "an int >= 0 (milliseconds)"),
    "CQRS_LOG_TIMED_OUT_QUERIES": Option(False, _bool, "a bool"),
    "CQRS_QUERY_LOGGER": Option("", lambda v: isinstance(v, str), "a logger name"),
    # dj_cqrs additions
    # Messages a consumer takes and applies together (one transaction per model), and how long it
    # waits for a batch to fill once a message is there. The prefetch is twice the batch size.
    "CQRS_BATCH_SIZE": Option(
        500, lambda v: _positive_int(v) and v <= 10000, "an int from 1 to 10000"
    ),
    "CQRS_BATCH_MAX_WAIT": Option(
        0.005, lambda v: _non_negative_number(v) and v <= 10, "a number of seconds from 0 to 10"
    ),
    # False: every message takes the per-message path (one transaction each), as django-cqrs.
    "CQRS_BATCH_APPLY": Option(True, _bool, "a bool"),
    # Scaling on RabbitMQ (docs/scaling.md). ``partitions``: N queues ``<queue>.p0`` ...
    # ``<queue>.p<N-1>`` fed by a consistent-hash exchange over (CQRS_ID, pk), each with a single
    # active consumer (per-key order over any number of consumer processes); None: one queue.
    "partitions": Option(
        None,
        lambda v: v is None or (_is_int(v) and 1 <= v <= MAX_PARTITIONS),
        f"None or an int from 1 to {MAX_PARTITIONS}",
    ),
    # x-queue-type of the replica, retry and dead-letter queues.
    "queue_type": Option(
        "classic", lambda v: v in QUEUE_TYPES, f"one of {', '.join(map(repr, QUEUE_TYPES))}"
    ),
    "tombstone_horizon": Option(
        7 * 86400, _non_negative_int_or_none, "an int >= 0 (seconds) or None"
    ),
    "max_message_bytes": Option(
        16 * 1024 * 1024, _positive_int_or_none, "an int > 0 (bytes) or None"
    ),
    # Exponential back-off of the default ``get_cqrs_retry_delay``: the n-th retry (n = 0, 1 ...)
    # waits ``CQRS_RETRY_DELAY * CQRS_RETRY_BACKOFF ** n`` seconds, capped at
    # ``CQRS_RETRY_MAX_DELAY`` (the cap never shortens ``CQRS_RETRY_DELAY`` itself). The default
    # factor 1 keeps django-cqrs's constant delay.
    "CQRS_RETRY_BACKOFF": Option(
        1, lambda v: _is_number(v) and v >= 1, "a number >= 1 (1 = constant delay)"
    ),
    "CQRS_RETRY_MAX_DELAY": Option(3600, _non_negative_number, "a number >= 0 (seconds)"),
    # Each apply transaction on PostgreSQL sends NOTIFY cqrs_<cqrs_id> (read-your-writes:
    # dj_cqrs.replica.wait_for listens instead of polling).
    "notify_applied": Option(True, _bool, "a bool"),
}

EVENTS_OPTIONS: dict[str, Option] = {
    # How long a handled event is remembered in the inbox (dj_cqrs_inbox) against a redelivery or
    # a second publication; None keeps every row. Pruned by the consumers at most once an hour.
    "inbox_retention": Option(
        7 * 86400, _non_negative_int_or_none, "an int >= 0 (seconds) or None (keep)"
    ),
}


def _tokens(v: Any) -> bool:
    if v is None or callable(v) or (isinstance(v, str) and "." in v):
        return True
    return isinstance(v, (list, tuple)) and all(isinstance(t, str) and t for t in v)


HTTP_OPTIONS: dict[str, Option] = {
    # Bearer tokens that may pull (``GET <mount>/pull/<cqrs_id>/``): a list of strings, or a
    # callable (or its dotted path) taking the token and returning True when it is valid. None: no
    # token is valid (every pull is refused with 401).
    "tokens": Option(
        None, _tokens, "a list of non-empty strings, a callable or a dotted path, or None"
    ),
    # The default and the largest ``limit`` of a pull page.
    "default_limit": Option(
        500, lambda v: _positive_int(v) and v <= 10000, "an int from 1 to 10000"
    ),
    "max_limit": Option(5000, lambda v: _positive_int(v) and v <= 10000, "an int from 1 to 10000"),
    # How long the change feed waits behind a hole in the outbox ids that a transaction still
    # open may fill (PostgreSQL and MySQL are asked whether such a transaction exists; SQLite's
    # writers never leave one). Past it the hole is skipped, with a warning.
    "gap_timeout": Option(300, _non_negative_number, "a number >= 0 (seconds)"),
}

WEBHOOKS_OPTIONS: dict[str, Option] = {
    # Tries of one delivery before it is parked as failed, and the exponential back-off between
    # them: ``retry_delay * 2 ** n`` seconds, at most ``max_retry_delay``.
    "attempts": Option(8, _positive_int, "an int > 0"),
    "retry_delay": Option(1.0, _non_negative_number, "a number >= 0 (seconds)"),
    "max_retry_delay": Option(300, _non_negative_number, "a number >= 0 (seconds)"),
    # Seconds to connect and to read the answer of one PUT.
    "timeout": Option(10, lambda v: _is_number(v) and v > 0, "a number > 0 (seconds)"),
    # Subscriptions one process delivers to at the same time (one thread each).
    "concurrency": Option(8, _positive_int, "an int > 0"),
    # Items read from the change feed at a time, per subscription.
    "batch_size": Option(100, lambda v: _positive_int(v) and v <= 10000, "an int from 1 to 10000"),
    # How long a process holds a subscription without renewing it before another may take it.
    "lease": Option(60, lambda v: _is_number(v) and v > 0, "a number > 0 (seconds)"),
}

#: The values :class:`dj_cqrs.middleware.AuditMiddleware` can put into ``meta["audit"]``.
AUDIT_FIELDS = ("user_id", "username", "request_id", "remote_addr", "method", "path")


def _audit_fields(v: Any) -> bool:
    return v is None or (isinstance(v, (list, tuple)) and all(f in AUDIT_FIELDS for f in v))


AUDIT_OPTIONS: dict[str, Option] = {
    # The values the middleware records (None: all of AUDIT_FIELDS); leave out personal data you
    # must not keep, e.g. ["user_id", "request_id", "method", "path"].
    "fields": Option(None, _audit_fields, f"None or a list of names from {list(AUDIT_FIELDS)}"),
    # How many proxies in front of the service append to X-Forwarded-For. 0: the header is ignored
    # and the client address is REMOTE_ADDR; n > 0: the n-th address from the right.
    "trusted_proxies": Option(0, lambda v: _is_int(v) and v >= 0, "an int >= 0"),
}


def _management_url(v: Any) -> bool:
    return v is None or v is False or (isinstance(v, str) and v.startswith(("http://", "https://")))


def _non_negative_number_or_none(v: Any) -> bool:
    return v is None or _non_negative_number(v)


STATUS_OPTIONS: dict[str, Option] = {
    # Thresholds of ``manage.py cqrs_status`` (and of the health-check backend): crossing one makes
    # the command exit 1. None: not checked. Its options (``--max-outbox-age`` ...) override them.
    "max_outbox_age": Option(300, _non_negative_number_or_none, "a number >= 0 (seconds) or None"),
    "max_outbox_pending": Option(None, _non_negative_int_or_none, "an int >= 0 or None"),
    "max_lag": Option(None, _non_negative_number_or_none, "a number >= 0 (seconds) or None"),
    "max_dead_letters": Option(None, _non_negative_int_or_none, "an int >= 0 or None"),
    # RabbitMQ's management HTTP API (unacknowledged messages, acknowledgement rate): None derives
    # http://<broker host>:15672/ with the broker's credentials; False: never asked.
    "management_url": Option(None, _management_url, "None, False or an http(s):// URL"),
    # Seconds to wait for the broker and the management API.
    "timeout": Option(5, lambda v: _is_number(v) and v > 0, "a number > 0 (seconds)"),
}

ROOT_OPTIONS: dict[str, Option] = {
    "transport": Option(None),
    # A URL, or the nodes of a cluster: a list of URLs or one ``;``-separated string (dj_cqrs).
    "url": Option(None, is_url_value, "a URL string or a non-empty list of URL strings"),
    "host": Option(None, lambda v: v is None or isinstance(v, str), "a host name"),
    "port": Option(None, lambda v: v is None or _is_int(v), "an int"),
    "user": Option(None, lambda v: v is None or isinstance(v, str), "a string"),
    "password": Option(None, lambda v: v is None or isinstance(v, str), "a string"),
    "exchange": Option("cqrs", lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "queue": Option(None, _str_or_none, "a non-empty string"),
    "consumer_prefetch_count": Option(10, _positive_int, "an int > 0"),
    # dj_cqrs additions (docs/operations.md): Prometheus metrics in this process (the [metrics]
    # extra); W3C trace context carried with events when opentelemetry-api is installed.
    "metrics": Option(False, _bool, "True or False"),
    "tracing": Option(True, _bool, "True or False"),
    # dj_cqrs addition: kombu ``Connection(transport_options=...)`` for KombuTransport, e.g.
    # ``{"data_folder_in": ..., "data_folder_out": ...}`` for ``filesystem://``. Copied, never
    # mutated; ignored by the RabbitMQ transport.
    "transport_options": Option(
        None, _str_keyed_dict_or_none, "a dict of kombu transport options (str keys) or None"
    ),
}

# Keys documented by mistake in django-cqrs's docs; they are reported, not silently ignored.
MISNAMED_KEYS: dict[str, str] = {
    "CQRS_DELAY_QUEUE_MAX_SIZE": "delay_queue_max_size",
}


def _section_options() -> dict[str, dict[str, Option]]:
    return {
        "master": MASTER_OPTIONS,
        "replica": REPLICA_OPTIONS,
        "events": EVENTS_OPTIONS,
        "http": HTTP_OPTIONS,
        "webhooks": WEBHOOKS_OPTIONS,
        "status": STATUS_OPTIONS,
        "audit": AUDIT_OPTIONS,
    }


def unknown_root_key_hint(key: str) -> str:
    """The hint of ``dj_cqrs.W002``: where an unknown top-level key belongs, when it can be told.

    django-cqrs users put section keys at the top level (``CQRS['CQRS_MAX_RETRIES']``, the
    documented ``CQRS_DELAY_QUEUE_MAX_SIZE``) or misspell one (``CQRS['Queue']``)."""
    lowered = key.lower()
    for section, options in _section_options().items():
        for name in options:
            if key == name or lowered == name.lower():
                return f"Did you mean CQRS[{section!r}][{name!r}]?"
    if key in MISNAMED_KEYS:
        return f"Did you mean CQRS['replica'][{MISNAMED_KEYS[key]!r}]?"
    known = sorted([*ROOT_OPTIONS, *SECTIONS])
    close = [k for k in known if k.lower() == lowered] or difflib.get_close_matches(key, known, n=1)
    if close:
        return f"Did you mean CQRS[{close[0]!r}]?"
    return f"Known keys: {', '.join(known)}."


def _unknown_section_key_hint(section: str, key: Any, options: dict[str, Option]) -> str:
    """The hint of ``dj_cqrs.W001``: the right name (``CQRS_DELAY_QUEUE_MAX_SIZE``), or the
    section a key belongs to (``CQRS['master']['CQRS_MAX_RETRIES']``), else the known keys."""
    if key in MISNAMED_KEYS:
        return f"Did you mean {MISNAMED_KEYS[key]!r}?"
    for other, other_options in _section_options().items():
        if other != section and key in other_options:
            return f"Did you mean CQRS[{other!r}][{key!r}]? It is a key of that section."
    if key in ROOT_OPTIONS:
        return f"Did you mean CQRS[{key!r}]? It is a top-level key."
    if isinstance(key, str):  # a case slip, a missing CQRS_ prefix or a typo: max_retries
        by_lower = {name.lower(): name for name in options}
        lowered = key.lower()
        name = by_lower.get(lowered) or by_lower.get(f"cqrs_{lowered}")
        close = difflib.get_close_matches(lowered, sorted(by_lower), n=1, cutoff=0.8)
        if name or close:
            return f"Did you mean {name or by_lower[close[0]]!r}?"
    return f"Known keys: {', '.join(sorted(options))}."


def test_runner_active() -> bool:
    """Whether Django's test environment is set up: ``django.test.utils.setup_test_environment()``
    ran and ``teardown_test_environment()`` did not yet (``manage.py test`` and pytest-django both
    call it). Nothing is imported: outside a test run ``django.test.utils`` is usually not loaded."""
    utils = sys.modules.get("django.test.utils")
    state = getattr(utils, "_TestState", None) if utils is not None else None
    return state is not None and hasattr(state, "saved_data")


def transport_from_url(url: Any) -> str | None:
    """The transport a ``url`` names when ``CQRS['transport']`` is left out: ``amqp://`` and
    ``amqps://`` the RabbitMQ transport, any other scheme kombu; None without a URL (of a
    cluster's URLs, the first says)."""
    urls = broker_urls(url) if is_url_value(url) else []
    scheme = url_scheme(urls[0]) if urls else ""
    if scheme in ("amqp", "amqps"):
        return TRANSPORT_ALIASES["rabbitmq"]
    return TRANSPORT_ALIASES["kombu"] if scheme else None


def effective_transport(raw: Any) -> Any:
    """What ``get_transport()`` resolves for ``settings.CQRS`` = ``raw``.

    ``CQRS['transport']`` when it is set, always (tests included: a suite that names its
    transport keeps it). Left out: the memory transport while Django's test environment is set
    up (as Django switches e-mail to locmem), else the transport ``CQRS['url']`` names; None
    when there is neither (``dj_cqrs.E002``)."""
    named = raw.get("transport") if isinstance(raw, dict) else None
    if named:
        return named
    if test_runner_active():
        return "memory"
    return transport_from_url(raw.get("url") if isinstance(raw, dict) else None)


#: System-check ids of invalid values; a run-time ``ConfigurationError`` carries the same id.
ROOT_CHECK_ID = "dj_cqrs.E005"
SECTION_CHECK_IDS: dict[str, str] = {
    "master": "dj_cqrs.E007",
    "replica": "dj_cqrs.E008",
    "events": "dj_cqrs.E012",
    "http": "dj_cqrs.E015",
    "webhooks": "dj_cqrs.E016",
    "status": "dj_cqrs.E090",
    "audit": "dj_cqrs.E017",
}
#: The sections of ``settings.CQRS`` (dicts of options).
SECTIONS = ("master", "replica", "events", "http", "webhooks", "status", "audit")


class _Source:
    """``settings.CQRS`` as it is now, read cheaply.

    ``django.conf.settings`` keeps every setting it returned in its own ``__dict__`` and drops it
    there when the setting is assigned or overridden (``override_settings``, the pytest-django
    ``settings`` fixture, ``settings.CQRS = ...``). Looking the value up in that dict costs a
    dictionary lookup instead of the ~1 us of ``settings.CQRS`` (LazyObject's ``__getattribute__``),
    and is never stale: when the entry is gone, the value is read the normal way.
    """

    __slots__ = ("_lazy_dict",)

    def __init__(self) -> None:
        self._lazy_dict: dict[str, Any] | None = None

    def __call__(self) -> Any:
        lazy_dict = self._lazy_dict
        if lazy_dict is None:
            lazy_dict = self._lazy_dict = object.__getattribute__(settings, "__dict__")
        value = lazy_dict.get("CQRS", _MISSING)
        if value is _MISSING:
            value = getattr(settings, "CQRS", None)
        return value


_current_cqrs = _Source()


class Section:
    """Read-only view of ``settings.CQRS[<name>]`` with defaults.

    Every read looks at ``settings.CQRS`` as it is at that moment, as django-cqrs does: a value
    assigned into the dict (``settings.CQRS["replica"]["CQRS_MAX_RETRIES"] = 5``), a section
    replaced, or ``override_settings(CQRS=...)`` is seen by the next read. What is cached is
    the validation of a value, by the identity of the object read.
    """

    def __init__(self, name: str, options: dict[str, Option]) -> None:
        self._name = name
        self._options = options
        self._values: dict[str, tuple[Any, Any]] = {}

    @property
    def _raw(self) -> dict[str, Any]:
        root = _current_cqrs()
        raw = root.get(self._name) if isinstance(root, dict) else None
        return raw if isinstance(raw, dict) else {}

    def _read(self, key: str) -> Any:
        root = _current_cqrs()
        raw = root.get(self._name) if isinstance(root, dict) else None
        value = raw.get(key, _MISSING) if isinstance(raw, dict) else _MISSING
        cached = self._values.get(key)
        if cached is not None and cached[0] is value:
            return cached[1]
        resolved = self._resolve(key, value)
        self._values[key] = (value, resolved)
        return resolved

    def _resolve(self, key: str, value: Any, default: Any = _MISSING) -> Any:
        option = self._options.get(key)
        if value is not _MISSING:
            if option is not None and option.check is not None and not option.check(value):
                raise ConfigurationError(
                    f"{SECTION_CHECK_IDS[self._name]}: CQRS[{self._name!r}][{key!r}] must be {option.expect},"
                    f" got {value!r}"
                )
            return value
        if option is not None:
            return option.default
        if default is not _MISSING:
            return default
        raise AttributeError(f"Unknown CQRS {self._name} setting {key!r}")

    def __getattr__(self, key: str) -> Any:
        # Only reached for names that are not options (those are properties, see _section_class).
        if key.startswith("_"):
            raise AttributeError(key)
        return self._read(key)

    def get(self, key: str, default: Any = _MISSING) -> Any:
        return self._resolve(key, self._raw.get(key, _MISSING), default)

    def raw(self) -> dict[str, Any]:
        return dict(self._raw)


def _option_property(key: str, doc: str) -> property:
    def read(self: Any) -> Any:
        return self._read(key)

    return property(read, doc=doc)


def _section_class(
    name: str, options: dict[str, Option], derived: dict[str, property] | None = None
) -> type[Section]:
    """A ``Section`` subclass with one property per option: a read is a plain attribute lookup
    (``__getattr__`` would first raise and catch an ``AttributeError`` on every read). ``derived``:
    read-only values computed from the options."""
    attrs = {
        key: _option_property(key, f"CQRS[{name!r}][{key!r}] (default {o.default!r})")
        for key, o in options.items()
    }
    attrs.update(derived or {})
    return type(f"{name.capitalize()}Section", (Section,), attrs)


#: AMQP's ``basic.qos`` prefetch count is a short: 65535 at most.
AMQP_MAX_PREFETCH = 65535


def _prefetch_count(section: Any) -> int:
    batch_size: int = section.CQRS_BATCH_SIZE
    return min(2 * batch_size, AMQP_MAX_PREFETCH)


_MasterSection = _section_class("master", MASTER_OPTIONS)
_EventsSection = _section_class("events", EVENTS_OPTIONS)
_HttpSection = _section_class("http", HTTP_OPTIONS)
_WebhooksSection = _section_class("webhooks", WEBHOOKS_OPTIONS)
_StatusSection = _section_class("status", STATUS_OPTIONS)
_AuditSection = _section_class("audit", AUDIT_OPTIONS)
_ReplicaSection = _section_class(
    "replica",
    REPLICA_OPTIONS,
    derived={
        "prefetch_count": property(
            _prefetch_count,
            doc="Unacknowledged messages one RabbitMQ worker holds: twice ``CQRS_BATCH_SIZE`` (the"
            " next batch arrives while one is applied), at most 65535.",
        )
    },
)


class CqrsSettings:
    """Lazy accessor for ``settings.CQRS``.

    Attributes: ``transport``, ``url``, ``exchange``, ``queue`` ... and the sections ``master`` and
    ``replica``. Each read sees ``settings.CQRS`` as it is then (values assigned into it included);
    ``reload()`` runs when Django's ``setting_changed`` fires for ``CQRS`` (and
    :mod:`dj_cqrs.transport` then drops the transport built from the old settings).
    """

    def __init__(self) -> None:
        self.master = _MasterSection("master", MASTER_OPTIONS)
        self.replica = _ReplicaSection("replica", REPLICA_OPTIONS)
        self.events = _EventsSection("events", EVENTS_OPTIONS)
        self.http = _HttpSection("http", HTTP_OPTIONS)
        self.webhooks = _WebhooksSection("webhooks", WEBHOOKS_OPTIONS)
        self.status = _StatusSection("status", STATUS_OPTIONS)
        self.audit = _AuditSection("audit", AUDIT_OPTIONS)
        self._values: dict[str, tuple[Any, Any]] = {}

    @property
    def raw(self) -> dict[str, Any]:
        value = _current_cqrs()
        return value if isinstance(value, dict) else {}

    @property
    def configured(self) -> bool:
        return isinstance(_current_cqrs(), dict)

    def _read(self, key: str) -> Any:
        root = _current_cqrs()
        value = root.get(key, _MISSING) if isinstance(root, dict) else _MISSING
        cached = self._values.get(key)
        if cached is not None and cached[0] is value:
            return cached[1]
        option = ROOT_OPTIONS[key]
        if value is _MISSING:
            resolved = option.default
        elif option.check is not None and not option.check(value):
            raise ConfigurationError(
                f"{ROOT_CHECK_ID}: CQRS[{key!r}] must be {option.expect}, got {value!r}"
            )
        else:
            resolved = value
        self._values[key] = (value, resolved)
        return resolved

    def __getattr__(self, key: str) -> Any:
        # Only reached for names that are not settings (those are properties, below).
        raise AttributeError(f"Unknown CQRS setting {key!r}")

    @property
    def dead_letter_queue(self) -> str:
        name = self.replica.dead_letter_queue
        return name or dead_letter_queue_name(self.queue)

    def reload(self) -> None:
        self._values.clear()
        self.master._values.clear()
        self.replica._values.clear()
        self.events._values.clear()
        self.http._values.clear()
        self.webhooks._values.clear()
        self.status._values.clear()
        self.audit._values.clear()


for _key, _option in ROOT_OPTIONS.items():
    setattr(
        CqrsSettings, _key, _option_property(_key, f"CQRS[{_key!r}] (default {_option.default!r})")
    )


cqrs_settings = CqrsSettings()


@receiver(setting_changed)
def _reload_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "CQRS":
        cqrs_settings.reload()


def _shown_url(url: str) -> str:
    """``url`` for a message, without the credentials a URL without a scheme may carry."""
    return f"***@{url.rsplit('@', 1)[1]}" if "@" in url else url


def validate(raw: Any, *, has_masters: bool, has_replicas: bool) -> list[Problem]:
    """Return every problem with ``settings.CQRS``; used by the system checks."""
    problems: list[Problem] = []
    if raw is _MISSING or raw is None:
        if has_masters or has_replicas:
            problems.append(
                Problem(
                    "dj_cqrs.E001",
                    "settings.CQRS is not defined, but CQRS models are registered.",
                    "Add CQRS = {'transport': 'dj_cqrs.transport.RabbitMQTransport', ...} to"
                    " your settings.",
                )
            )
        return problems
    if not isinstance(raw, dict):
        problems.append(
            Problem("dj_cqrs.E001", "settings.CQRS must be a dict.", "See docs/settings.md.")
        )
        return problems

    if not effective_transport(raw):
        url = raw.get("url")
        problems.append(
            Problem(
                "dj_cqrs.E002",
                (
                    f"CQRS['transport'] is not set, and CQRS['url'] {_shown_url(url)!r} has no"
                    " scheme (amqp://, redis://, ...) to tell it from."
                    if isinstance(url, str) and url
                    else "CQRS['transport'] is not set, and there is no CQRS['url'] to tell it from."
                ),
                "Set CQRS['url'] (amqp:// or amqps:// selects RabbitMQ, another kombu URL kombu), or"
                " CQRS['transport'] to a dotted path such as 'dj_cqrs.transport.RabbitMQTransport'"
                f" or an alias: {', '.join(sorted(a for a in TRANSPORT_ALIASES if '.' not in a))}.",
            )
        )
    for key in raw:
        if key not in ROOT_OPTIONS and key not in SECTIONS:
            problems.append(
                Problem(
                    "dj_cqrs.W002",
                    f"Unknown setting CQRS[{key!r}] is ignored.",
                    unknown_root_key_hint(str(key)),
                    warning=True,
                )
            )
    for key, option in ROOT_OPTIONS.items():
        if key == "transport" or key not in raw:
            continue
        if option.check is not None and not option.check(raw[key]):
            problems.append(
                Problem(
                    ROOT_CHECK_ID,
                    f"CQRS[{key!r}] must be {option.expect}, got {raw[key]!r}.",
                    f"Fix CQRS[{key!r}] or remove it to use the default ({option.default!r}).",
                )
            )
    if has_replicas and not raw.get("queue"):
        problems.append(
            Problem(
                "dj_cqrs.E006",
                "CQRS['queue'] is required when replica models are registered.",
                "Set CQRS['queue'] to this replica service's queue name, e.g. 'orders_replica'.",
            )
        )
    for section, options, check_id in (
        ("master", MASTER_OPTIONS, SECTION_CHECK_IDS["master"]),
        ("replica", REPLICA_OPTIONS, SECTION_CHECK_IDS["replica"]),
        ("events", EVENTS_OPTIONS, SECTION_CHECK_IDS["events"]),
        ("http", HTTP_OPTIONS, SECTION_CHECK_IDS["http"]),
        ("webhooks", WEBHOOKS_OPTIONS, SECTION_CHECK_IDS["webhooks"]),
        ("status", STATUS_OPTIONS, SECTION_CHECK_IDS["status"]),
        ("audit", AUDIT_OPTIONS, SECTION_CHECK_IDS["audit"]),
    ):
        value = raw.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            problems.append(
                Problem(check_id, f"CQRS[{section!r}] must be a dict.", "See docs/settings.md.")
            )
            continue
        for key, item in value.items():
            known = options.get(key)
            if known is None:
                hint = _unknown_section_key_hint(section, key, options)
                problems.append(
                    Problem(
                        "dj_cqrs.W001",
                        f"Unknown setting CQRS[{section!r}][{key!r}] is ignored.",
                        hint,
                        warning=True,
                    )
                )
                continue
            if known.check is not None and not known.check(item):
                problems.append(
                    Problem(
                        check_id,
                        f"CQRS[{section!r}][{key!r}] must be {known.expect}, got {item!r}.",
                        f"Fix it or remove it to use the default ({known.default!r}).",
                    )
                )
        for key in ("correlation_function", "meta_function"):
            if section == "master" and isinstance(value.get(key), str):
                try:
                    obj = import_string(value[key])
                except ImportError as exc:
                    problems.append(
                        Problem(
                            "dj_cqrs.E009",
                            f"CQRS['master'][{key!r}] cannot be imported: {exc}.",
                            "Give a dotted path to a function, or the function itself.",
                        )
                    )
                else:
                    if not callable(obj):
                        problems.append(
                            Problem(
                                "dj_cqrs.E009",
                                f"CQRS['master'][{key!r}] is not callable.",
                                "Give a dotted path to a function, or the function itself.",
                            )
                        )
    problems.extend(_scaling_problems(raw))
    return problems


def _scaling_problems(raw: dict[str, Any]) -> list[Problem]:
    """``replica.partitions`` and ``replica.queue_type`` are RabbitMQ topology (W100)."""
    replica = raw.get("replica")
    if not isinstance(replica, dict):
        return []
    used = [k for k in ("partitions", "queue_type") if replica.get(k) not in (None, "classic")]
    transport = raw.get("transport")
    name = TRANSPORT_ALIASES.get(transport, transport) if isinstance(transport, str) else ""
    if not used or not name or "rabbit_mq" in name or "RabbitMQ" in name:
        return []
    return [
        Problem(
            "dj_cqrs.W100",
            f"CQRS['replica'][{used[0]!r}] is only implemented by the RabbitMQ transport; the"
            f" transport {transport!r} ignores it.",
            "Use CQRS['transport'] = 'rabbitmq', or remove the setting (see docs/scaling.md).",
            warning=True,
        )
    ]


def resolve_callable(value: Any) -> Callable[..., Any] | None:
    """Turn a setting that holds a callable or a dotted path into the callable."""
    if value is None:
        return None
    if isinstance(value, str):
        return import_string(value)  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]
