"""System checks (``manage.py check``): settings, transport, and model configuration.

Ids: E001-E009, E011, E012, E018 settings and transport; E013, E014 domain event handlers; E020-E022 registries; E030, E031, E033, E034 master
models; E040-E043 replica models, E010 dj_cqrs not installed; E050, E051, W050, W051 database triggers; W001, W002 unknown
keys; E070, W070, W071 HTTP pull. ``docs/settings.md`` lists them all. Every message carries a hint.
"""

from __future__ import annotations

import sys
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from dj_cqrs.conf import cqrs_settings, effective_transport, validate
from dj_cqrs.constants import ALL_BASIC_FIELDS
from dj_cqrs.core.broker_urls import (
    broker_urls,
    is_cluster,
    is_url_value,
    url_scheme,
    url_vhost,
    without_password,
)
from dj_cqrs.events.registry import handlers as event_handlers
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.master import feed, hooks
from dj_cqrs.master.serializers import serialized_fields, serializer_class
from dj_cqrs.registry import master_registry, replica_registry
from dj_cqrs.replica.values import required_fields
from dj_cqrs.transport import resolve_transport_class

_MISSING = object()

#: The module of the RabbitMQ transport (see :func:`_is_rabbitmq`).
RABBITMQ_MODULE = "dj_cqrs.transport.rabbit_mq"
KOMBU_MODULE = "dj_cqrs.transport.kombu"


def _message(problem: Any, obj: Any = None) -> checks.CheckMessage:
    cls = checks.Warning if getattr(problem, "warning", False) else checks.Error
    return cls(problem.msg, hint=problem.hint, id=problem.id, obj=obj)


@checks.register("dj_cqrs")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    raw = getattr(settings, "CQRS", _MISSING)
    has_masters = len(master_registry) > 0
    has_replicas = len(replica_registry) > 0
    if raw is _MISSING and not (has_masters or has_replicas):
        return []
    result = [
        _message(p)
        for p in validate(
            None if raw is _MISSING else raw, has_masters=has_masters, has_replicas=has_replicas
        )
    ]
    if isinstance(raw, dict) and effective_transport(raw):
        result.extend(_check_transport(raw))
    return result


@checks.register("dj_cqrs")
def check_event_handlers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Handlers need a queue to be bound to, and their database must exist."""
    registered = event_handlers()
    if not registered:
        return []
    result: list[checks.CheckMessage] = []
    raw = getattr(settings, "CQRS", None)
    if not (isinstance(raw, dict) and raw.get("queue")):
        result.append(
            checks.Error(
                "CQRS['queue'] is required when domain event handlers are registered.",
                hint="Set CQRS['queue'] to this service's queue name: cqrs_consume binds it to the handlers' patterns.",
                id="dj_cqrs.E013",
            )
        )
    for handler in registered:
        if handler.using not in settings.DATABASES:
            result.append(
                checks.Error(
                    f"Event handler {handler.name!r} uses database {handler.using!r}, which is not in DATABASES.",
                    hint="Pass using= an alias of settings.DATABASES (the database of the handler's writes and inbox).",
                    obj=handler.fn,
                    id="dj_cqrs.E014",
                )
            )
    return result


def _check_transport(raw: dict[str, Any]) -> list[checks.CheckMessage]:
    try:
        cls = resolve_transport_class(effective_transport(raw))
    except ConfigurationError as exc:
        text = str(exc)
        check_id, _, msg = text.partition(": ")
        return [
            checks.Error(
                msg,
                hint="Use 'dj_cqrs.transport.RabbitMQTransport', 'dj_cqrs.transport.KombuTransport',"
                " an alias ('rabbitmq', 'kombu', 'memory') or your BaseTransport subclass.",
                id=check_id,
            )
        ]
    if is_url_value(raw.get("url")) and (
        isinstance(raw.get("url"), (list, tuple)) or is_cluster(raw.get("url"))
    ):
        return _check_broker_nodes(broker_urls(raw["url"]), cls)
    url = raw.get("url")
    if isinstance(url, str) and url and _is_kombu(cls):
        return _check_kombu_url(url)
    if isinstance(url, str) and url and _is_rabbitmq(cls):
        import pika  # loaded already, with the RabbitMQ transport; not loaded by other services

        scheme = url_scheme(url)
        if scheme not in ("amqp", "amqps"):
            # pika reads any other scheme (redis://, http://, a bare host) as plain AMQP
            return [
                checks.Error(
                    f"CQRS['url'] {without_password(url)!r} is not an AMQP URL: the RabbitMQ"
                    f" transport speaks only amqp:// and amqps://"
                    f"{f', not {scheme}://' if scheme else ''}.",
                    hint="Use amqp://user:password@host:5672/vhost or amqps://... (TLS); for"
                    " another broker use CQRS['transport'] = 'kombu' (or leave it out: the URL's"
                    " scheme selects the transport).",
                    id="dj_cqrs.E011",
                )
            ]
        try:
            pika.URLParameters(url)
        except Exception as exc:  # noqa: BLE001 - pika raises ValueError/TypeError for bad URLs
            return [
                checks.Error(
                    f"CQRS['url'] is not a valid RabbitMQ URL: {exc}",
                    hint="Use amqp://user:password@host:5672/vhost or amqps://... (TLS).",
                    id="dj_cqrs.E011",
                )
            ]
    return []


def _check_broker_nodes(urls: list[str], cls: type) -> list[checks.CheckMessage]:
    """``CQRS['url']`` naming the nodes of a cluster: every URL valid (RabbitMQ: E011), all of
    them the same kind of broker and, for RabbitMQ, the same virtual host (E018)."""
    errors: list[checks.CheckMessage] = []
    rabbitmq = _is_rabbitmq(cls)
    if rabbitmq:
        import pika  # loaded already, with the RabbitMQ transport

        for index, url in enumerate(urls):
            scheme = url_scheme(url)
            problem = None if scheme in ("amqp", "amqps") else "not an amqp:// or amqps:// URL"
            if problem is None:
                try:
                    pika.URLParameters(url)
                except Exception as exc:  # noqa: BLE001 - pika raises ValueError/TypeError for bad URLs
                    problem = f"not a valid RabbitMQ URL: {exc}"
            if problem is not None:
                errors.append(
                    checks.Error(
                        f"Node {index + 1} of CQRS['url'] ({without_password(url)!r}) is {problem}.",
                        hint="List one amqp://user:password@host:5672/vhost (or amqps://) URL per"
                        " node of the RabbitMQ cluster.",
                        id="dj_cqrs.E011",
                    )
                )
        vhosts = sorted({url_vhost(url) for url in urls})
        if not errors and len(vhosts) > 1:
            errors.append(
                checks.Error(
                    f"The nodes of CQRS['url'] name different virtual hosts: {vhosts}.",
                    hint="The URLs of CQRS['url'] are the nodes of one RabbitMQ cluster, which"
                    " share their virtual hosts: give every URL the same vhost.",
                    id="dj_cqrs.E018",
                )
            )
        return errors
    kinds = sorted({_broker_kind(url_scheme(url)) for url in urls})
    if len(kinds) > 1:
        errors.append(
            checks.Error(
                f"The URLs of CQRS['url'] name different kinds of broker: {kinds}.",
                hint="A list of URLs is the failover list of one broker (kombu tries them in"
                " turn): use URLs of one transport.",
                id="dj_cqrs.E018",
            )
        )
    return errors


def _broker_kind(scheme: str) -> str:
    """kombu's transports by scheme; amqp:// and amqps:// (and pyamqp) are one broker."""
    return "amqp" if scheme in ("amqp", "amqps", "pyamqp") else scheme


def _is_kombu(cls: type) -> bool:
    """The kombu transport or a subclass of it (imported with it, as :func:`_is_rabbitmq`)."""
    kombu_transport = sys.modules.get(KOMBU_MODULE)
    return kombu_transport is not None and issubclass(cls, kombu_transport.KombuTransport)


#: The package a kombu transport needs, by URL scheme, and what installs it.
_KOMBU_DRIVERS = dict.fromkeys(
    ("redis", "rediss"),
    "Install the redis package: pip install 'dj-cqrs[redis]' (or pip install redis).",
)


def _check_kombu_url(url: str) -> list[checks.CheckMessage]:
    """E011 for a kombu URL whose transport kombu does not know (``http://``) or cannot load
    because its client library is missing (``redis://`` without ``redis``): without the check,
    every publish fails at run time with kombu's bare ``AttributeError``."""
    from kombu.transport import resolve_transport

    scheme = url_scheme(url).split("+", 1)[0]
    if not scheme:
        return []  # kombu reads a bare host as amqp://
    try:
        resolve_transport(scheme)
    except KeyError:
        return [
            checks.Error(
                f"CQRS['url'] {without_password(url)!r}: kombu has no transport for {scheme}://.",
                hint="Use a kombu URL (amqp://, redis://, filesystem://, sqs://, ...), or amqp:// with"
                " the RabbitMQ transport.",
                id="dj_cqrs.E011",
            )
        ]
    except Exception as exc:  # noqa: BLE001 - kombu's transport modules fail in many ways without their driver
        return [
            checks.Error(
                f"CQRS['url'] {without_password(url)!r} needs kombu's {scheme!r} transport, which"
                f" cannot be loaded ({type(exc).__name__}: {exc}): its client library is missing.",
                hint=_KOMBU_DRIVERS.get(
                    scheme, f"Install the client library kombu's {scheme!r} transport uses."
                ),
                id="dj_cqrs.E011",
            )
        ]
    return []


def _is_rabbitmq(cls: type) -> bool:
    """The RabbitMQ transport or a subclass of it.

    Its module is not imported here: a class that is one was imported with it, and a service on
    another transport does not load pika (~40 ms) for this check."""
    rabbit_mq = sys.modules.get(RABBITMQ_MODULE)
    return rabbit_mq is not None and issubclass(cls, rabbit_mq.RabbitMQTransport)


@checks.register("dj_cqrs")
def check_registries(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    result: list[checks.CheckMessage] = []
    for registry, check_id in (
        (master_registry, "dj_cqrs.E020"),
        (replica_registry, "dj_cqrs.E021"),
    ):
        for cqrs_id, first, second in registry.duplicates:
            if not cqrs_id:
                result.append(
                    checks.Error(
                        f"{first.__name__} has no CQRS_ID.",
                        hint="Set CQRS_ID = '<unique name>' on the model.",
                        obj=first,
                        id="dj_cqrs.E022",
                    )
                )
                continue
            result.append(
                checks.Error(
                    f"CQRS_ID {cqrs_id!r} is used by both {first.__module__}.{first.__qualname__} and"
                    f" {second.__module__}.{second.__qualname__} ({registry.kind} models).",
                    hint="Each CQRS_ID must be unique among the master (and among the replica)"
                    " models of a service.",
                    obj=second,
                    id=check_id,
                )
            )
    for model in master_registry:
        result.extend(_check_master(model))
    for model in replica_registry:
        result.extend(_check_replica(model))
    return result


def _check_master(model: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    opts = model._meta
    concrete = {f.name for f in opts.concrete_fields}
    fields = getattr(model, "CQRS_FIELDS", ALL_BASIC_FIELDS)
    serializer = getattr(model, "CQRS_SERIALIZER", None)
    if fields != ALL_BASIC_FIELDS:
        if not isinstance(fields, (list, tuple)) or not all(isinstance(f, str) for f in fields):
            errors.append(
                checks.Error(
                    "CQRS_FIELDS must be '__all__' or a list of field names.",
                    hint="e.g. CQRS_FIELDS = ['id', 'name'].",
                    obj=model,
                    id="dj_cqrs.E030",
                )
            )
        else:
            unknown = [f for f in fields if f not in concrete]
            if unknown:
                errors.append(
                    checks.Error(
                        f"CQRS_FIELDS names unknown fields: {', '.join(unknown)}.",
                        hint=f"Known fields: {', '.join(sorted(concrete))}.",
                        obj=model,
                        id="dj_cqrs.E030",
                    )
                )
            if len(set(fields)) != len(fields):
                errors.append(
                    checks.Error(
                        "CQRS_FIELDS has duplicates.",
                        hint="List each field once.",
                        obj=model,
                        id="dj_cqrs.E030",
                    )
                )
            if opts.pk.name not in fields:
                errors.append(
                    checks.Error(
                        f"CQRS_FIELDS must include the primary key {opts.pk.name!r}.",
                        hint="Add the primary key to CQRS_FIELDS.",
                        obj=model,
                        id="dj_cqrs.E030",
                    )
                )
        if serializer:
            errors.append(
                checks.Error(
                    "CQRS_FIELDS and CQRS_SERIALIZER cannot be combined.",
                    hint="Choose the fields in the serializer, and drop CQRS_FIELDS.",
                    obj=model,
                    id="dj_cqrs.E031",
                )
            )
    if serializer:
        try:
            serializer_class(model)
        except ConfigurationError as exc:
            errors.append(
                checks.Error(
                    str(exc).split(": ", 1)[-1],
                    hint="Give the dotted path of a serializer class.",
                    obj=model,
                    id="dj_cqrs.E033",
                )
            )
    if getattr(model, "CQRS_DB_TRIGGERS", False):
        errors.extend(_check_triggers(model))
    tracked = getattr(model, "CQRS_TRACKED_FIELDS", None)
    if tracked is not None and tracked != ALL_BASIC_FIELDS:
        if not isinstance(tracked, (list, tuple)):
            errors.append(
                checks.Error(
                    "CQRS_TRACKED_FIELDS must be None, '__all__' or a list of field names.",
                    hint="e.g. CQRS_TRACKED_FIELDS = ['status'].",
                    obj=model,
                    id="dj_cqrs.E034",
                )
            )
        else:
            unknown = [f for f in tracked if f not in concrete]
            if unknown:
                errors.append(
                    checks.Error(
                        f"CQRS_TRACKED_FIELDS names unknown fields: {', '.join(map(str, unknown))}.",
                        hint=f"Known fields: {', '.join(sorted(concrete))}.",
                        obj=model,
                        id="dj_cqrs.E034",
                    )
                )
    return errors


def _check_triggers(model: Any) -> list[checks.CheckMessage]:
    result: list[checks.CheckMessage] = []
    if not getattr(model, "CQRS_PRODUCE", True):
        result.append(
            checks.Error(
                f"{model.__name__} sets both CQRS_DB_TRIGGERS and CQRS_PRODUCE = False: its triggers"
                " would publish every write anyway.",
                hint="Remove CQRS_DB_TRIGGERS, or set CQRS_PRODUCE = True.",
                obj=model,
                id="dj_cqrs.E051",
            )
        )
    if hooks.overridden(model, "is_sync_instance"):
        result.append(
            checks.Warning(
                f"{model.__name__} overrides is_sync_instance(), which database triggers cannot call:"
                " every write of the table is published.",
                hint="Filter on the replica instead, or drop CQRS_DB_TRIGGERS.",
                obj=model,
                id="dj_cqrs.W051",
            )
        )

    try:
        import pgtrigger  # noqa: F401
    except ImportError:
        return result + [
            checks.Error(
                f"{model.__name__} sets CQRS_DB_TRIGGERS but django-pgtrigger is not installed.",
                hint="pip install 'dj-cqrs[postgres]' (or django-pgtrigger) and add 'pgtrigger' to INSTALLED_APPS.",
                obj=model,
                id="dj_cqrs.E050",
            )
        ]
    if not apps.is_installed("pgtrigger"):
        return result + [
            checks.Warning(
                f"{model.__name__} sets CQRS_DB_TRIGGERS but 'pgtrigger' is not in INSTALLED_APPS:"
                " its triggers are installed after `migrate`, not by migrations.",
                hint="Add 'pgtrigger' to INSTALLED_APPS and run makemigrations.",
                obj=model,
                id="dj_cqrs.W050",
            )
        ]
    return result


def _check_replica(model: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    meta = getattr(model, "_meta", None)
    mapping = getattr(model, "CQRS_MAPPING", None)
    if meta is None:
        return errors
    errors.extend(_check_required_fields(model, mapping))
    if mapping is not None:
        if not isinstance(mapping, dict):
            errors.append(
                checks.Error(
                    "CQRS_MAPPING must be a dict {master_key: replica_field}.",
                    hint="e.g. {'id': 'id', 'name': 'title'}.",
                    obj=model,
                    id="dj_cqrs.E040",
                )
            )
            return errors
        names = {f.name for f in meta.concrete_fields} | {f.attname for f in meta.concrete_fields}
        unknown = [v for v in mapping.values() if v not in names]
        if unknown:
            errors.append(
                checks.Error(
                    f"CQRS_MAPPING targets unknown fields: {', '.join(map(str, unknown))}.",
                    hint=f"Known fields: {', '.join(sorted(f.name for f in meta.concrete_fields))}.",
                    obj=model,
                    id="dj_cqrs.E041",
                )
            )
        if meta.pk.name not in mapping.values() and meta.pk.attname not in mapping.values():
            errors.append(
                checks.Error(
                    f"CQRS_MAPPING must map a master key to the primary key {meta.pk.name!r}.",
                    hint=f"Add e.g. 'id': '{meta.pk.name}'.",
                    obj=model,
                    id="dj_cqrs.E042",
                )
            )
    return errors


#: Keys every SAVE carries whatever the master's fields.
_ALWAYS_SENT = frozenset({"cqrs_revision", "cqrs_updated"})


def _check_required_fields(model: Any, mapping: Any) -> list[checks.CheckMessage]:
    """A non-null replica field that no message can fill makes every SAVE fail as
    ``missing_required_fields``. What the replica can know: the targets of its ``CQRS_MAPPING``,
    and the fields of a master model with the same ``CQRS_ID`` in this service."""
    if getattr(model, "CQRS_CUSTOM_SERIALIZATION", False) or getattr(
        model, "CQRS_NO_DB_OPERATIONS", False
    ):
        return []
    master = master_registry.get_model_by_cqrs_id(model.CQRS_ID)
    if isinstance(mapping, dict):
        filled = set(mapping.values())
        source = "CQRS_MAPPING"
    elif master is not None and serializer_class(master) is None:
        sent = {n for pair in serialized_fields(master) for n in pair}
        filled = sent
        source = f"the master model {master.__module__}.{master.__qualname__} (same CQRS_ID)"
    else:
        return []  # the master is elsewhere: its fields are not known here
    pk = model._meta.pk.name  # a missing key is dj_cqrs.E042
    missing = [
        name
        for name, attname in required_fields(model)
        if name not in filled and attname not in filled and name not in _ALWAYS_SENT and name != pk
    ]
    if not missing:
        return []
    return [
        checks.Error(
            f"Replica field(s) {', '.join(missing)} of {model.__name__} are NOT NULL, but no message"
            f" can fill them ({source} does not provide them): every SAVE would be dead-lettered as"
            " missing_required_fields.",
            hint="Make them null=True, map a master key to them in CQRS_MAPPING, add them to the"
            " master's CQRS_FIELDS, or fill them yourself with CQRS_CUSTOM_SERIALIZATION and"
            " cqrs_create/cqrs_update.",
            obj=model,
            id="dj_cqrs.E043",
        )
    ]


@checks.register("dj_cqrs")
def check_http(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """HTTP pull: W070 tokens configured on a master without the outbox (every pull would answer
    503); E070 a master model's ``CQRS_HTTP_TOKENS`` that is neither None, a callable, a dotted
    path to one, nor a list of non-empty strings."""
    result: list[checks.CheckMessage] = []
    try:
        tokens, outbox = cqrs_settings.http.tokens, cqrs_settings.master.CQRS_OUTBOX
    except ConfigurationError:
        tokens, outbox = None, True  # E015/E007 report the bad value
    if tokens is not None and not outbox and len(master_registry) > 0:
        result.append(
            checks.Warning(
                "CQRS['http']['tokens'] is set but CQRS['master']['CQRS_OUTBOX'] is False: HTTP pull"
                " reads the outbox, so every pull answers 503.",
                hint="Turn the outbox on, or remove CQRS['http']['tokens'] if this service serves no pull.",
                id="dj_cqrs.W070",
            )
        )
    if tokens is not None and outbox and len(master_registry) > 0:
        try:
            retention, gap = cqrs_settings.master.outbox_retention, cqrs_settings.http.gap_timeout
        except ConfigurationError:
            retention = None  # E015/E007 report the bad value
        if retention is not None and float(retention) <= float(gap) + feed.CLOCK_MARGIN:
            result.append(
                checks.Warning(
                    f"CQRS['master']['outbox_retention'] ({retention} s) is not longer than"
                    f" CQRS['http']['gap_timeout'] ({gap} s) plus {feed.CLOCK_MARGIN:g} s: no pull"
                    " cursor stays valid, so every pull answers 503.",
                    hint="Keep outbox_retention well above gap_timeout (the defaults: 86400 and 300),"
                    " or lower gap_timeout.",
                    id="dj_cqrs.W071",
                )
            )
    for model in master_registry.models.values():
        allowed = getattr(model, "CQRS_HTTP_TOKENS", None)
        problem = None
        if isinstance(allowed, str):
            try:
                if not callable(import_string(allowed)):
                    problem = f"{allowed!r} is not callable"
            except ImportError as exc:
                problem = f"{allowed!r} cannot be imported: {exc}"
        elif allowed is not None and not callable(allowed):
            if not isinstance(allowed, (list, tuple, set, frozenset)) or not all(
                isinstance(token, str) and token for token in allowed
            ):
                problem = f"{allowed!r} is not a list of non-empty strings"
        if problem is not None:
            result.append(
                checks.Error(
                    f"CQRS_HTTP_TOKENS of {model.__name__}: {problem}.",
                    hint="Give a list of tokens, a callable f(token) -> bool, its dotted path, or None (every"
                    " token of CQRS['http']['tokens']).",
                    obj=model,
                    id="dj_cqrs.E070",
                )
            )
    return result


@checks.register("dj_cqrs")
def check_webhooks(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Webhooks: W080 a lease a single delivery may outlast (a PUT may take ``timeout`` to connect
    and ``timeout`` again to be answered), so another process could take a subscription over in
    the middle of a delivery and send the same change at the same time."""
    from dj_cqrs.conf import cqrs_settings

    try:
        lease, timeout = float(cqrs_settings.webhooks.lease), float(cqrs_settings.webhooks.timeout)
    except ConfigurationError:
        return []  # E016 reports the bad value
    if lease > 2 * timeout:
        return []
    return [
        checks.Warning(
            f"CQRS['webhooks']['lease'] ({lease:g}s) is not longer than twice CQRS['webhooks']['timeout']"
            f" ({timeout:g}s): a slow subscriber may hold a delivery past the lease, and another process"
            " may take the subscription over meanwhile (the change is then sent twice, possibly out of order).",
            hint="Make the lease more than twice the timeout (defaults: lease 60, timeout 10).",
            id="dj_cqrs.W080",
        )
    ]
