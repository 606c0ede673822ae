"""Read-your-writes: committed revisions on the master, ``wait_for`` on the replica, the HTTP
helpers. SQLite (the fallback poll) by default; with DATABASE_URL=postgres://... the waits listen
for the consumers' notifications."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction
from django.http import HttpResponse
from django.test import RequestFactory, override_settings
from django.utils import timezone

from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.master import last_revision, recording, token_for
from dj_cqrs.ops import read_your_writes as ryw
from dj_cqrs.replica import applied, notify, wait_for
from tests.apps.master_app.models import SimplestModel
from tests.apps.replica_app.models import SimplestModelRef
from tests.unit.conftest import cqrs_with

pytestmark = pytest.mark.django_db(transaction=True)


def _apply_later(transport, delay):
    """Apply what the master published, from another thread (as a consumer process would)."""

    def run():
        time.sleep(delay)
        try:
            transport.join(fail_fast=True)
        finally:
            from django.db import connections

            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_last_revision_and_token():
    obj = SimplestModel.objects.create(name="a")
    assert last_revision(obj) == 0
    obj.name = "b"
    obj.save()
    assert last_revision(obj) == 1
    assert token_for(obj) == f"simplest:{obj.pk}:1"


def test_recording_collects_committed_changes_only(transport):
    with recording() as revisions:
        obj = SimplestModel.objects.create(name="a")
        with transaction.atomic():
            obj.name = "b"
            obj.save()
            obj.name = "c"
            obj.save()  # one revision per transaction
        try:
            with transaction.atomic():
                SimplestModel.objects.create(name="rolled back")
                raise RuntimeError
        except RuntimeError:
            pass
        pk = obj.pk
        obj.delete()
    assert [(r.cqrs_id, r.pk, r.revision, r.deleted) for r in revisions] == [
        ("simplest", str(pk), 0, False),
        ("simplest", str(pk), 1, False),
        ("simplest", str(pk), 2, True),
    ]
    assert ryw.header_value(revisions) == f"simplest:{pk}:2"
    assert [r.token() for r in revisions][0] == f"simplest:{pk}:0"
    SimplestModel.objects.create(name="outside")  # nothing is recorded outside the block
    assert len(revisions) == 3


def test_wait_for_returns_once_applied(transport):
    obj = SimplestModel.objects.create(name="a")
    assert not applied("simplest", obj.pk, 0)
    thread = _apply_later(transport, 0.3)
    started = time.monotonic()
    assert wait_for("simplest", obj.pk, 0, timeout=10) is True
    elapsed = time.monotonic() - started
    thread.join()
    assert 0.25 <= elapsed < 3
    assert SimplestModelRef.objects.get(pk=obj.pk).name == "a"
    assert wait_for("simplest", obj.pk, 0, timeout=0) is True  # already there: no wait
    assert wait_for("simplest", str(obj.pk), 0, timeout=0) is True  # a pk from a header


def test_wait_for_a_later_revision_times_out_until_it_is_applied(transport):
    obj = SimplestModel.objects.create(name="a")
    transport.join(fail_fast=True)
    obj.name = "b"
    obj.save()  # revision 1, not applied yet
    started = time.monotonic()
    assert wait_for("simplest", obj.pk, 1, timeout=0.5) is False
    assert 0.45 <= time.monotonic() - started < 2
    transport.join(fail_fast=True)
    assert wait_for("simplest", obj.pk, 1, timeout=0.5) is True
    assert wait_for("simplest", obj.pk, 0, timeout=0) is True  # an older revision: applied too


def test_wait_for_a_delete_uses_the_tombstone(transport):
    obj = SimplestModel.objects.create(name="a")
    transport.join(fail_fast=True)
    with recording() as revisions:
        obj.delete()
    [deleted] = revisions
    assert deleted.deleted and deleted.revision == 1
    assert wait_for("simplest", deleted.pk, deleted.revision, timeout=0.1) is False
    thread = _apply_later(transport, 0.2)
    assert wait_for("simplest", deleted.pk, deleted.revision, timeout=10) is True
    thread.join()


def test_wait_for_unknown_or_rowless_models():
    with pytest.raises(ConfigurationError, match="no replica model"):
        wait_for("nope", 1, 0, timeout=0)
    with pytest.raises(ConfigurationError, match="stores no rows"):
        wait_for("meta_model", 1, 0, timeout=0)  # a RawReplicaMixin event handler


@pytest.mark.skipif(connection.vendor != "postgresql", reason="LISTEN/NOTIFY: PostgreSQL only")
def test_postgresql_wakes_on_the_notification_not_the_safety_net(transport):
    obj = SimplestModel.objects.create(name="a")
    # applied 1.3 s from now: the safety-net checks run at 0 s, 1 s, 2 s; only the NOTIFY sent
    # by the apply transaction can end the wait before 2 s
    thread = _apply_later(transport, 1.3)
    started = time.monotonic()
    assert wait_for("simplest", obj.pk, 0, timeout=10) is True
    elapsed = time.monotonic() - started
    thread.join()
    assert 1.25 <= elapsed < 1.8, elapsed


@pytest.mark.skipif(connection.vendor != "postgresql", reason="LISTEN/NOTIFY: PostgreSQL only")
def test_the_listener_stops_listening_before_it_is_closed(transport, monkeypatch):
    """With Django's psycopg pool, closing the listener gives the connection back to the pool:
    it must not keep listening for the application's next queries."""
    from django.db import connections

    obj = SimplestModel.objects.create(name="a")
    channels = []
    create = connections.create_connection

    def create_connection(alias):
        listener = create(alias)
        close = listener.close

        def close_and_look():
            with listener.connection.cursor() as cursor:
                cursor.execute("SELECT pg_listening_channels()")
                channels.append(cursor.fetchall())
            close()

        listener.close = close_and_look
        return listener

    monkeypatch.setattr(connections, "create_connection", create_connection)
    assert wait_for("simplest", obj.pk, 5, timeout=0.1) is False
    assert channels == [[]]


class _ReadsElsewhere:
    """Reads of the replica models go to "other" (say, a hot standby), writes to "default"."""

    def db_for_read(self, model, **hints):
        return "other" if model._meta.app_label == "replica_app" else None

    def db_for_write(self, model, **hints):
        return "default"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="LISTEN/NOTIFY: PostgreSQL only")
@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_the_wait_listens_where_the_consumers_write_and_reads_where_reads_go(
    transport, monkeypatch
):
    from django.db import connections

    SimplestModelRef.objects.using("other").create(
        id=7, name="copy", cqrs_revision=3, cqrs_updated=timezone.now()
    )
    listened = []
    create = connections.create_connection

    def create_connection(alias):
        listened.append(alias)
        return create(alias)

    monkeypatch.setattr(connections, "create_connection", create_connection)
    with override_settings(DATABASE_ROUTERS=[f"{__name__}._ReadsElsewhere"]):
        assert wait_for("simplest", 7, 3, timeout=1) is True  # the row read on "other"
    assert listened == ["default"]  # a standby has no LISTEN, nor the consumers' NOTIFY


class _PGconn:
    """libpq's connection as psycopg exposes it: input read from the socket, the queue of
    received notifications (``notifies()``: one or None)."""

    def __init__(self, sock):
        self.sock = sock
        self.queued = []
        self.consumed = 0

    def consume_input(self):
        self.consumed += 1
        self.sock.setblocking(False)
        try:
            self.queued += [b"notify"] * len(self.sock.recv(100))
        except BlockingIOError:
            pass

    def notifies(self):
        return self.queued.pop() if self.queued else None


class _Psycopg31Connection:
    """What ``wait_for`` uses of a psycopg 3.1 connection: ``notifies()`` without a timeout
    (a generator blocking until a notification), the socket, libpq's notification queue."""

    def __init__(self):
        import socket

        self.ours, self.server = socket.socketpair()
        self.pgconn = _PGconn(self.ours)

    def notifies(self):
        raise AssertionError("psycopg 3.1's notifies() blocks until a notification comes")
        yield  # a generator, as psycopg's

    def fileno(self):
        return self.ours.fileno()


def test_psycopg_31_connection_waits_on_its_socket():
    from dj_cqrs.replica import wait

    raw = _Psycopg31Connection()
    started = time.monotonic()
    wait._wait_notification(raw, 0.2)  # nothing comes: the timeout
    assert 0.15 < time.monotonic() - started < 2 and raw.pgconn.consumed == 1
    raw.server.send(b"xx")  # two notifications arrive
    started = time.monotonic()
    wait._wait_notification(raw, 5)
    assert time.monotonic() - started < 1 and raw.pgconn.queued == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="LISTEN/NOTIFY: PostgreSQL only")
def test_postgresql_notify_can_be_turned_off(transport):
    assert notify.enabled("default")
    with override_settings(CQRS=cqrs_with(replica={"notify_applied": False})):
        assert not notify.enabled("default")
        obj = SimplestModel.objects.create(name="a")
        thread = _apply_later(transport, 0.2)
        assert wait_for("simplest", obj.pk, 0, timeout=10) is True  # the fallback poll
        thread.join()


def test_channel_names():
    assert notify.channel("simplest") == "cqrs_simplest"
    long = notify.channel("x" * 100)
    assert long.startswith("cqrs_") and len(long) <= 63


def test_parse_tokens():
    assert ryw.parse("simplest:5:3, basic:a:b:0,bad, x::1, y:1:-1, z:2:") == [
        ("simplest", "5", 3),
        ("basic", "a:b", 0),
    ]


def test_master_middleware_and_decorator_set_the_header(transport):
    def view(request):
        obj = SimplestModel.objects.create(name="v")
        request.pk = obj.pk
        return HttpResponse("ok")

    request = RequestFactory().post("/")
    response = ryw.RevisionHeaderMiddleware(view)(request)
    assert response[ryw.HEADER] == f"simplest:{request.pk}:0"
    request = RequestFactory().post("/")
    response = ryw.revision_header(view)(request)
    assert response[ryw.HEADER] == f"simplest:{request.pk}:0"
    response = ryw.RevisionHeaderMiddleware(lambda r: HttpResponse("read only"))(
        RequestFactory().get("/")
    )
    assert ryw.HEADER not in response


def test_master_header_names_at_most_the_tokens_a_replica_reads(transport):
    def view(request):
        request.objs = [SimplestModel.objects.create(name=str(i)) for i in range(300)]
        for obj in request.objs[:3]:
            obj.save()  # a later revision of an object already named
        return HttpResponse("ok")

    request = RequestFactory().post("/")
    value = ryw.RevisionHeaderMiddleware(view)(request)[ryw.HEADER]
    assert len(value) < 1024
    assert ryw.parse(value) == [
        ("simplest", str(obj.pk), 1 if index < 3 else 0)
        for index, obj in enumerate(request.objs[: ryw.MAX_TOKENS])
    ]


def test_replica_middleware_waits_for_the_token(transport):
    obj = SimplestModel.objects.create(name="v")
    seen = []

    def view(request):
        seen.append(SimplestModelRef.objects.filter(pk=obj.pk).exists())
        return HttpResponse("ok")

    header = {"HTTP_X_CQRS_REVISION": f"simplest:{obj.pk}:0, unknown_id:1:1"}
    response = ryw.wait_for_revision(timeout=0.2)(view)(RequestFactory().get("/", **header))
    assert response[ryw.STALE_HEADER] == "1" and seen == [
        False
    ]  # not applied in time: served anyway
    thread = _apply_later(transport, 0.2)
    response = ryw.WaitForRevisionMiddleware(view)(RequestFactory().get("/", **header))
    thread.join()
    assert ryw.STALE_HEADER not in response and seen == [False, True]
    response = ryw.WaitForRevisionMiddleware(view)(RequestFactory().get("/"))  # no header: no wait
    assert ryw.STALE_HEADER not in response
    bad_pk = {"HTTP_X_CQRS_REVISION": "simplest:not-an-int:0"}
    assert ryw.STALE_HEADER not in ryw.WaitForRevisionMiddleware(view)(
        RequestFactory().get("/", **bad_pk)
    )
