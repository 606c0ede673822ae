"""``dj_cqrs.middleware.AuditMiddleware`` through Django's test client."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from dj_cqrs import audit
from dj_cqrs.testing import use_memory_transport
from tests.unit.conftest import cqrs_with

pytestmark = pytest.mark.django_db(transaction=True)

MIDDLEWARE = [*settings.MIDDLEWARE, "dj_cqrs.middleware.AuditMiddleware"]


@pytest.fixture
def transport():
    with (
        override_settings(
            ROOT_URLCONF="tests.unit.audit.urls",
            MIDDLEWARE=MIDDLEWARE,
            CQRS=cqrs_with(master={"outbox_publish": "sync"}),
        ),
        use_memory_transport() as memory,
    ):
        yield memory


@pytest.fixture
def user():
    return User.objects.create_user("ann", password="pw")


def test_logged_in_user_request_values_and_correlation(client, transport, user):
    client.force_login(user)
    response = client.post("/create/?name=n", HTTP_X_REQUEST_ID="req-42")
    assert response.status_code == 200
    assert response["X-Request-ID"] == "req-42"
    (message,) = transport.published
    assert message.data["meta"] == {
        "audit": {
            "user_id": user.pk,
            "username": "ann",
            "request_id": "req-42",
            "remote_addr": "127.0.0.1",
            "method": "POST",
            "path": "/create/",
        }
    }
    assert message.data["correlation_id"] == "req-42"
    assert audit.current() is None


def test_anonymous_request_has_no_user_values_and_a_generated_request_id(client, transport):
    response = client.post("/create/")
    rid = response["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    (message,) = transport.published
    assert message.data["meta"]["audit"] == {
        "request_id": rid,
        "remote_addr": "127.0.0.1",
        "method": "POST",
        "path": "/create/",
    }
    assert message.data["correlation_id"] == rid


@pytest.mark.parametrize("given", ["x" * 129, "a b", "<script>", "ré", ""])
def test_an_insane_request_id_is_replaced(client, transport, given):
    response = client.post("/create/", HTTP_X_REQUEST_ID=given)
    rid = response["X-Request-ID"]
    assert rid != given and re.fullmatch(r"[0-9a-f]{32}", rid)
    assert transport.published[0].data["meta"]["audit"]["request_id"] == rid


def test_a_request_that_emits_nothing_does_not_load_the_session_or_user(client, transport, user):
    client.force_login(user)
    minimal = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "dj_cqrs.middleware.AuditMiddleware",
    ]
    with override_settings(MIDDLEWARE=minimal), CaptureQueriesContext(connection) as queries:
        response = client.get("/nothing/")
    assert response.content == b"True"
    assert list(queries) == []
    with override_settings(MIDDLEWARE=minimal), CaptureQueriesContext(connection) as queries:
        client.post("/create/")
    assert any("auth_user" in q["sql"] for q in queries)  # read when the event is recorded
    assert transport.published[0].data["meta"]["audit"]["username"] == "ann"


def test_correlation_function_wins_over_the_request_id(client, user):
    cqrs = cqrs_with(
        master={"outbox_publish": "sync", "correlation_function": lambda *a: "from-function"}
    )
    with (
        override_settings(ROOT_URLCONF="tests.unit.audit.urls", MIDDLEWARE=MIDDLEWARE, CQRS=cqrs),
        use_memory_transport() as memory,
    ):
        client.post("/create/", HTTP_X_REQUEST_ID="req-1")
    assert memory.published[0].data["correlation_id"] == "from-function"
    assert memory.published[0].data["meta"]["audit"]["request_id"] == "req-1"


def test_domain_events_of_a_request_carry_the_audit_values(client, transport, user):
    client.force_login(user)
    client.post("/emit/", HTTP_X_REQUEST_ID="req-7")
    (event,) = transport.events
    assert event.meta["audit"]["username"] == "ann" and event.meta["audit"]["request_id"] == "req-7"
    assert event.correlation_id == "req-7"


def test_forwarded_for_is_ignored_unless_proxies_are_trusted(client, user):
    for proxies, expected in (
        (0, "127.0.0.1"),
        (1, "10.0.0.2"),
        (2, "203.0.113.9"),
        (3, "127.0.0.1"),
    ):
        cqrs = cqrs_with(master={"outbox_publish": "sync"}, audit={"trusted_proxies": proxies})
        with (
            override_settings(
                ROOT_URLCONF="tests.unit.audit.urls", MIDDLEWARE=MIDDLEWARE, CQRS=cqrs
            ),
            use_memory_transport() as memory,
        ):
            client.post("/create/", HTTP_X_FORWARDED_FOR="203.0.113.9, 10.0.0.2")
        assert memory.published[0].data["meta"]["audit"]["remote_addr"] == expected, proxies


def test_fields_setting_leaves_values_out(client, user):
    client.force_login(user)
    cqrs = cqrs_with(master={"outbox_publish": "sync"}, audit={"fields": ["user_id", "request_id"]})
    with (
        override_settings(ROOT_URLCONF="tests.unit.audit.urls", MIDDLEWARE=MIDDLEWARE, CQRS=cqrs),
        use_memory_transport() as memory,
    ):
        client.post("/create/", HTTP_X_REQUEST_ID="r")
    assert memory.published[0].data["meta"]["audit"] == {"user_id": user.pk, "request_id": "r"}


def test_async_request(transport):
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    response = async_to_sync(AsyncClient().post)("/acreate/", headers={"X-Request-ID": "async-1"})
    assert response["X-Request-ID"] == "async-1"
    assert transport.published[0].data["meta"]["audit"]["request_id"] == "async-1"
    assert transport.published[0].data["correlation_id"] == "async-1"
