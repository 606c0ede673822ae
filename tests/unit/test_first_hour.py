"""The first hour of a new user (issue 17): errors that say what to do, help and messages.

Error paths go through ``call_command`` or, where the settings of a whole process matter
(``dj_cqrs`` not installed, an unmigrated database, ``--skip-checks``), through the small project
``tests/first_hour_project`` in a subprocess. The test-runner transport switch is proven against a
real broker in ``integration_tests/test_first_hour.py``; here its rules are tested in-process.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from django.core import checks
from django.core.management import CommandError, call_command, get_commands, load_command_class
from django.db import models
from django.test import override_settings
from django.test.utils import isolate_apps

from dj_cqrs.checks import check_registries, check_settings
from dj_cqrs.conf import effective_transport, validate
from dj_cqrs.core.messages import Action, InboundMessage
from dj_cqrs.core.names import ERROR_HEADER
from dj_cqrs.core.settlement import failure_headers
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.mixins import MasterMixin, ReplicaMixin
from dj_cqrs.models import OutboxEvent
from dj_cqrs.process.supervisor import EXIT_CONFIG, Supervisor
from dj_cqrs.replica.worker import worker_main
from dj_cqrs.testing import use_memory_transport
from dj_cqrs.transport import get_transport, reset_transport, set_transport
from dj_cqrs.transport.memory import MemoryTransport
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
from tests.apps.master_app.models import SimplestModel
from tests.apps.replica_app.models import AllTypesModelRef
from tests.unit.conftest import cqrs_settings_and_transport, cqrs_with
from tests.unit.replica.helpers import row, send

PROJECT = Path(__file__).resolve().parent.parent / "first_hour_project"
REPO = PROJECT.parent.parent
NOWHERE = "amqp://guest:secret@127.0.0.1:9/%2F"  # nothing listens on port 9


@pytest.fixture
def configured():
    """The transport the settings name (not the unit tests' explicit memory transport)."""
    set_transport(None)
    reset_transport()
    yield
    set_transport(None)
    reset_transport()


@pytest.fixture
def outside_tests():
    """As in a process that is not a test run (``manage.py runserver``, ``cqrs_consume``)."""
    with mock.patch("dj_cqrs.conf.test_runner_active", return_value=False):
        yield


def project(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``tests/first_hour_project/manage.py`` with the ``FH_*`` settings variables."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FH_")}
    environment.update(PYTHONPATH=os.pathsep.join([str(REPO), str(PROJECT)]), **env)
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- the transport of a test run -------------------------------------------------------------------


def test_a_test_run_without_a_named_transport_uses_the_memory_transport(configured):
    with override_settings(CQRS=cqrs_with(transport=None, url=NOWHERE)):
        assert isinstance(get_transport(), MemoryTransport)


@pytest.mark.django_db(transaction=True)
def test_a_transport_named_in_the_settings_wins_under_the_test_runner(configured, caplog):
    """django-cqrs suites name their transport (often a mock of it): they keep it."""
    caplog.set_level(logging.WARNING, logger="django-cqrs.transport")
    with override_settings(
        CQRS=cqrs_with(transport="dj_cqrs.transport.RabbitMQTransport", url=NOWHERE)
    ):
        with mock.patch.object(RabbitMQTransport, "produce") as produce:
            assert isinstance(get_transport(), RabbitMQTransport)
            SimplestModel.objects.create(name="x")
    assert produce.call_count == 1
    [warning] = [r.getMessage() for r in caplog.records if r.name == "django-cqrs.transport"]
    assert (
        "Tests publish through CQRS['transport'] = 'dj_cqrs.transport.RabbitMQTransport'" in warning
    )
    assert "127.0.0.1:9" in warning and "secret" not in warning


def test_outside_a_test_run_the_url_selects_the_transport(outside_tests):
    assert (
        effective_transport({"url": "amqp://h/%2F"})
        == "dj_cqrs.transport.rabbit_mq.RabbitMQTransport"
    )
    assert (
        effective_transport({"url": "amqps://h/%2F"})
        == "dj_cqrs.transport.rabbit_mq.RabbitMQTransport"
    )
    assert (
        effective_transport({"url": "redis://h:6379/0"}) == "dj_cqrs.transport.kombu.KombuTransport"
    )
    assert (
        effective_transport({"url": ["amqp://a/", "amqp://b/"]})
        == "dj_cqrs.transport.rabbit_mq.RabbitMQTransport"
    )
    assert effective_transport({"transport": "kombu", "url": "amqp://h/"}) == "kombu"  # named: kept
    assert effective_transport({}) is None
    assert [p.id for p in validate({}, has_masters=True, has_replicas=False)] == ["dj_cqrs.E002"]
    assert validate({"url": "amqp://h/"}, has_masters=True, has_replicas=False) == []


def test_under_the_test_runner_a_missing_transport_is_memory_and_no_error():
    assert effective_transport({"url": "amqp://h/"}) == "memory"
    assert effective_transport({"transport": "rabbitmq"}) == "rabbitmq"
    assert validate({}, has_masters=True, has_replicas=False) == []


# -- errors that don't say what to do --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("batch_apply", [True, False], ids=["batched", "per-message"])
def test_missing_required_fields_are_named_in_the_log_and_x_cqrs_error(caplog, batch_apply):
    caplog.set_level(logging.ERROR, logger="django-cqrs")
    with cqrs_settings_and_transport(
        replica={"CQRS_MAX_RETRIES": 0, "CQRS_BATCH_APPLY": batch_apply}
    ) as transport:
        outcome = send(transport, "SAVE", row(1, 0), "all_types")  # no "text" (NOT NULL)

    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "missing_required_fields")
    message = transport.dead_letters[0][0]
    headers = failure_headers(
        InboundMessage(message.body, message.routing_key, message.headers), outcome
    )
    assert headers[ERROR_HEADER] == "missing_required_fields: required field(s) missing: text"
    logged = [r.getMessage() for r in caplog.records if r.name == "django-cqrs.replica"]
    assert logged == [
        "Not all required CQRS fields are provided in data (all_types). Missing: text."
    ]
    assert not AllTypesModelRef.objects.exists()


@pytest.mark.django_db
def test_e043_a_replica_field_the_local_master_never_sends(isolated_registries):
    with isolate_apps("tests.apps.replica_app", "tests.apps.master_app"):

        class Shipped(MasterMixin):
            CQRS_ID = "f17_shipped"
            name = models.CharField(max_length=10)

            class Meta:
                app_label = "master_app"

        class ShippedRef(ReplicaMixin):
            CQRS_ID = "f17_shipped"
            id = models.IntegerField(primary_key=True)
            name = models.CharField(max_length=10)
            warehouse = models.CharField(max_length=10)  # extra and NOT NULL: never filled
            note = models.CharField(max_length=10, null=True)  # extra but nullable: fine

            class Meta:
                app_label = "replica_app"

        errors = [m for m in check_registries() if m.obj is ShippedRef]
    assert [e.id for e in errors] == ["dj_cqrs.E043"]
    assert "warehouse" in errors[0].msg and "note" not in errors[0].msg
    assert "null=True" in errors[0].hint


@pytest.mark.django_db
def test_e043_a_replica_field_outside_cqrs_mapping(isolated_registries):
    with isolate_apps("tests.apps.replica_app"):

        class MappedRef(ReplicaMixin):
            CQRS_ID = "f17_mapped"
            CQRS_MAPPING = {"id": "id", "title": "name"}
            id = models.IntegerField(primary_key=True)
            name = models.CharField(max_length=10)
            code = models.CharField(max_length=10)

            class Meta:
                app_label = "replica_app"

        class CustomRef(ReplicaMixin):
            CQRS_ID = "f17_custom"
            CQRS_MAPPING = {"id": "id"}
            CQRS_CUSTOM_SERIALIZATION = True  # fills its fields itself
            id = models.IntegerField(primary_key=True)
            code = models.CharField(max_length=10)

            class Meta:
                app_label = "replica_app"

        messages = check_registries()
    assert [(m.id, m.obj) for m in messages if m.obj in (MappedRef, CustomRef)] == [
        ("dj_cqrs.E043", MappedRef)
    ]


def test_e010_dj_cqrs_missing_from_installed_apps(tmp_path):
    env = {"FH_NO_DJ_CQRS": "1", "FH_DB": str(tmp_path / "db.sqlite3"), "FH_URL": NOWHERE}
    check = project("check", **env)
    assert check.returncode == 1
    assert "shop.Product: (dj_cqrs.E010) 'dj_cqrs' is not in INSTALLED_APPS" in check.stderr
    assert "HINT: Add 'dj_cqrs' to INSTALLED_APPS, then run manage.py migrate." in check.stderr

    assert project("migrate", "--run-syncdb", "--skip-checks", "-v", "0", **env).returncode == 0
    save = (
        "from shop.models import Product\n"
        "try:\n    Product.objects.create(name='a', price=1)\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
        "print('rows', Product.objects.count())"
    )
    shell = project("shell", "-c", save, **env)
    assert "ConfigurationError dj_cqrs.E010: 'dj_cqrs' is not in INSTALLED_APPS" in shell.stdout, (
        shell.stderr
    )
    assert "Add 'dj_cqrs' to INSTALLED_APPS" in shell.stdout
    assert "rows 0" in shell.stdout  # the write failed with it: nothing half-done


def _create():
    SimplestModel.objects.create(id=2, name="new")


def _update():
    obj = SimplestModel.objects.get(id=1)
    obj.name = "changed"
    obj.save()


def _delete():
    SimplestModel.objects.get(id=1).delete()


def _bulk_create():
    SimplestModel.cqrs.bulk_create([SimplestModel(id=2, name="new")])


def _bulk_update():
    SimplestModel.cqrs.bulk_update(SimplestModel.objects.filter(id=1), name="changed")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "write", [_create, _update, _delete, _bulk_create, _bulk_update], ids=lambda f: f.__name__[1:]
)
def test_a_bad_transport_fails_the_write_before_commit(configured, write):
    """Checks did not run (a script, a worker): the write itself fails and nothing is kept,
    on PostgreSQL too, where an autocommit save writes its row and its outbox row in one
    statement."""
    with use_memory_transport():
        SimplestModel.objects.create(id=1, name="kept")
    OutboxEvent.objects.all().delete()
    with override_settings(CQRS=cqrs_with(transport="no.such.Transport")):
        with pytest.raises(ConfigurationError, match="dj_cqrs.E003"):
            write()
    assert list(SimplestModel.objects.values_list("id", "name")) == [(1, "kept")]
    assert not OutboxEvent.objects.exists()


def test_cqrs_consume_stops_at_start_on_an_unmigrated_database(tmp_path):
    started = time.monotonic()
    result = project(
        "cqrs_consume",
        FH_REPLICA="1",
        FH_QUEUE="f17_fh",
        FH_URL=NOWHERE,
        FH_DB=str(tmp_path / "empty.sqlite3"),
    )
    assert result.returncode == 1
    assert (
        "Database 'default' has no table for replica model(s) shop.ProductRef (shop_productref):"
        " run manage.py migrate first." in result.stderr
    )
    assert time.monotonic() - started < 30  # stopped, without connecting or retrying anything


def test_cqrs_consume_with_skip_checks_and_no_queue_stops(tmp_path):
    """Without the checks, E006 still stops it (it used to restart its workers for ever)."""
    env = {"FH_REPLICA": "1", "FH_URL": NOWHERE, "FH_DB": str(tmp_path / "db.sqlite3")}
    assert project("migrate", "--run-syncdb", "-v", "0", "--skip-checks", **env).returncode == 0
    result = project("cqrs_consume", "--skip-checks", **env, timeout=30)
    assert result.returncode == 1
    assert "dj_cqrs.E006: CQRS['queue'] is not set" in result.stderr


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "spawned"])
def test_the_supervisor_does_not_restart_a_worker_stopped_by_its_settings(fork):
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        started = time.monotonic()
        code = Supervisor(sys.exit, args=(EXIT_CONFIG,), workers=2, fork=fork).run()
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
    assert code == EXIT_CONFIG
    assert time.monotonic() - started < 20


def test_a_worker_exits_with_ex_config_on_a_configuration_error(configured, caplog):
    caplog.set_level(logging.ERROR, logger="django-cqrs")
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        # django.setup() ran already; run again it would reconfigure logging under caplog
        with (
            override_settings(CQRS=cqrs_with(transport="no.such.Transport")),
            mock.patch("django.setup"),
        ):
            with pytest.raises(SystemExit) as exit_info:
                worker_main(None)
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
    assert exit_info.value.code == EXIT_CONFIG
    assert any("dj_cqrs.E003" in r.getMessage() for r in caplog.records)


@pytest.mark.django_db
@pytest.mark.parametrize("subcommand", ["dump", "retry", "purge", "count", "summary"])
def test_cqrs_dead_letters_without_a_queue_is_e006(subcommand):
    with override_settings(CQRS=cqrs_with(queue=None)), use_memory_transport():
        with pytest.raises(
            CommandError, match=r"^dj_cqrs\.E006: CQRS\['queue'\] is not set"
        ) as error:
            call_command("cqrs_dead_letters", subcommand)
    assert "Set CQRS['queue']" in str(error.value)


# -- help and messages -----------------------------------------------------------------------------


def _help(name: str) -> str:
    return load_command_class("dj_cqrs", name).create_parser("manage.py", name).format_help()


def test_cqrs_dead_letters_help_lists_every_subcommand_on_its_own_line():
    text = _help("cqrs_dead_letters")
    lines = text.splitlines()
    for subcommand in ("dump", "retry", "purge", "count", "summary"):
        [line] = [ln for ln in lines if ln.strip().startswith(subcommand + " ")]
        assert len(line.split(None, 1)[1]) > 10  # with what it does


def test_cqrs_relay_min_age_gives_its_unit():
    text = " ".join(_help("cqrs_relay").split())
    assert "--min-age SECONDS" in text
    assert "at least this many seconds old" in text


#: django-cqrs 3.1.0's own spellings of --cqrs-id (kept as aliases).
DJANGO_CQRS_ALIASES = {"cqrs_bulk_dump": ["-c"]}


def test_every_cqrs_id_option_is_spelled_the_same():
    commands = sorted(name for name, app in get_commands().items() if app == "dj_cqrs")
    seen = []
    for name in commands:
        parser = load_command_class("dj_cqrs", name).create_parser("manage.py", name)
        actions = [a for a in parser._actions if "--cqrs-id" in a.option_strings]
        for sub in parser._actions:  # subcommands (cqrs_subscriptions add)
            for subparser in (
                getattr(sub, "choices", None).values()
                if isinstance(getattr(sub, "choices", None), dict)
                else []
            ):
                actions += [a for a in subparser._actions if "--cqrs-id" in a.option_strings]
        for action in actions:
            seen.append(name)
            assert action.option_strings[:2] == ["--cqrs-id", "-cid"], (name, action.option_strings)
            assert set(action.option_strings[2:]) == set(DJANGO_CQRS_ALIASES.get(name, [])), name
    assert {
        "cqrs_consume",
        "cqrs_sync",
        "cqrs_bulk_dump",
        "cqrs_pull",
        "cqrs_subscriptions",
    } <= set(seen)


def test_bulk_dump_keeps_django_cqrs_c_and_takes_cid(tmp_path):
    for flag in ("-c", "-cid", "--cqrs-id"):
        out = io.StringIO()
        with pytest.raises(CommandError, match="Wrong CQRS ID: nope!"):
            call_command("cqrs_bulk_dump", flag, "nope", "-o", "-", stdout=out)


@pytest.mark.django_db(transaction=True)
def test_plurals_of_dead_letters(transport):
    with cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": 0}) as memory:
        memory.send_raw(b"not json", routing_key="simplest")
        memory.join()
        err = io.StringIO()
        call_command("cqrs_dead_letters", "dump", stdout=io.StringIO(), stderr=err)
        assert err.getvalue().strip() == "1 dead letter shown"
        out = io.StringIO()
        call_command("cqrs_dead_letters", "purge", stdout=out)
        assert out.getvalue() == "Purged 1 dead letter\n"
        out = io.StringIO()
        call_command("cqrs_dead_letters", "purge", stdout=out)
        assert out.getvalue() == "Purged 0 dead letters\n"


# -- settings: W002 and E011 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("CQRS_MAX_RETRIES", "Did you mean CQRS['replica']['CQRS_MAX_RETRIES']?"),
        ("delay_queue_max_size", "Did you mean CQRS['replica']['delay_queue_max_size']?"),
        ("CQRS_DELAY_QUEUE_MAX_SIZE", "Did you mean CQRS['replica']['delay_queue_max_size']?"),
        ("CQRS_MESSAGE_TTL", "Did you mean CQRS['master']['CQRS_MESSAGE_TTL']?"),
        ("Queue", "Did you mean CQRS['queue']?"),
        ("exchage", "Did you mean CQRS['exchange']?"),
    ],
)
def test_w002_says_where_a_django_cqrs_key_belongs(key, hint):
    [problem] = [
        p for p in validate({"transport": "memory", key: 1}, has_masters=False, has_replicas=False)
    ]
    assert (problem.id, problem.msg, problem.hint) == (
        "dj_cqrs.W002",
        f"Unknown setting CQRS[{key!r}] is ignored.",
        hint,
    )


def test_w002_lists_the_known_keys_otherwise():
    [problem] = validate(
        {"transport": "memory", "zzz_unrelated": 1}, has_masters=False, has_replicas=False
    )
    assert (
        problem.hint.startswith("Known keys: ")
        and "'queue'" not in problem.hint
        and "queue" in problem.hint
    )


def test_settings_md_agrees_with_w001_and_w002():
    from dj_cqrs.conf import SECTIONS

    text = " ".join((REPO / "docs" / "settings.md").read_text().split())
    sentence = text[text.index("An unknown top-level key") :].split(". ")[0]
    assert "dj_cqrs.W002" in sentence and "ignored" in sentence
    for section in SECTIONS:  # W001 covers every section, and the page says so
        assert f"`{section}`" in sentence, section
    [row_w002] = [r for r in text.split("| `dj_cqrs.W002` |")[1:2]]
    assert "belongs" in row_w002.split(" | ")[1] or "section" in row_w002.split(" | ")[1]


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "http://127.0.0.1:15672/", "127.0.0.1:5672"]
)
def test_e011_the_rabbitmq_transport_refuses_non_amqp_urls(url):
    with override_settings(CQRS=cqrs_with(transport="rabbitmq", url=url)):
        [error] = [m for m in check_settings() if m.id == "dj_cqrs.E011"]
    assert "is not an AMQP URL" in error.msg
    assert "kombu" in error.hint


def test_e011_passes_amqp_and_amqps():
    for url in ("amqp://guest:guest@127.0.0.1:5672/%2F", "amqps://u:p@rabbit.example:5671/vhost"):
        with override_settings(CQRS=cqrs_with(transport="rabbitmq", url=url)):
            assert [m for m in check_settings() if m.id == "dj_cqrs.E011"] == []


def test_e011_hides_the_password():
    with override_settings(
        CQRS=cqrs_with(transport="rabbitmq", url="redis://user:hunter2@h:6379/0")
    ):
        [error] = [m for m in checks.run_checks(tags=["dj_cqrs"]) if m.id == "dj_cqrs.E011"]
    assert "hunter2" not in error.msg


def test_w001_says_which_section_a_key_belongs_to():
    [problem] = validate(
        {"transport": "memory", "master": {"CQRS_MAX_RETRIES": 5}},
        has_masters=False,
        has_replicas=False,
    )
    assert problem.id == "dj_cqrs.W001"
    assert (
        problem.hint
        == "Did you mean CQRS['replica']['CQRS_MAX_RETRIES']? It is a key of that section."
    )


@pytest.mark.django_db(transaction=True)
def test_cqrs_status_counts_one_event_in_the_singular(transport):
    from tests.unit.ops.test_status import _pending, _run

    _pending(age=1)
    with override_settings(CQRS=cqrs_with(status={"max_outbox_pending": 0})):
        code, out = _run()
    assert code == 1
    assert "outbox default/simplest: 1 event pending (limit 0)" in out
