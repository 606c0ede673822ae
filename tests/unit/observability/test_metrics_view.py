"""``dj_cqrs.views.metrics``: the master's figures for a web process, staff or bearer token only."""

from __future__ import annotations

import sys

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.test import RequestFactory, override_settings

from dj_cqrs import metrics
from dj_cqrs.views import metrics as metrics_view
from tests.apps.master_app.models import SimplestModel
from tests.unit.conftest import cqrs_with

pytestmark = pytest.mark.django_db(transaction=True)


def get(headers=None, user=None):
    request = RequestFactory().get("/cqrs/metrics/", headers=headers or {})
    request.user = user or AnonymousUser()
    return metrics_view(request)


@pytest.fixture
def tokens():
    with override_settings(CQRS=cqrs_with(metrics=True, http={"tokens": ["s3cret"]})):
        yield
    metrics.reset()


def test_refused_without_staff_session_or_token(tokens):
    response = get()
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert get({"Authorization": "Bearer wrong"}).status_code == 401
    plain = User.objects.create_user("u", password="x")
    assert get(user=plain).status_code == 401


def test_outbox_backlog_is_read_when_scraped(tokens, transport):
    SimplestModel.objects.create(name="published")
    transport.fail_with = ConnectionError("broker down")
    SimplestModel.objects.create(name="pending 1")
    SimplestModel.objects.create(name="pending 2")
    response = get({"Authorization": "Bearer s3cret"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'cqrs_outbox_pending{cqrs_id="simplest"} 2.0' in text
    oldest = [
        line
        for line in text.splitlines()
        if line.startswith('cqrs_outbox_oldest_pending_seconds{cqrs_id="simplest"}')
    ]
    assert len(oldest) == 1 and 0 <= float(oldest[0].split()[-1]) < 60
    assert 'cqrs_published_total{cqrs_id="simplest"}' in text
    assert 'cqrs_publish_failures_total{cqrs_id="simplest"}' in text


def test_an_empty_backlog_reads_zero_for_every_master_model(tokens, transport):
    SimplestModel.objects.create(name="published")
    text = get({"Authorization": "Bearer s3cret"}).content.decode()
    assert 'cqrs_outbox_pending{cqrs_id="simplest"} 0.0' in text
    assert 'cqrs_outbox_oldest_pending_seconds{cqrs_id="simplest"} 0.0' in text


def test_staff_session_may_read(tokens):
    staff = User.objects.create_user("s", password="x", is_staff=True)
    response = get(user=staff)
    assert response.status_code == 200
    assert "# TYPE cqrs_outbox_pending gauge" in response.content.decode()


def test_501_without_prometheus_client(tokens, monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    response = get({"Authorization": "Bearer s3cret"})
    assert response.status_code == 501


def test_mounted_by_the_dj_cqrs_urls():
    from django.urls import include, path
    from django.urls.resolvers import RegexPattern, URLResolver

    resolver = URLResolver(RegexPattern(r"^/"), [path("cqrs/", include("dj_cqrs.urls"))])
    match = resolver.resolve("/cqrs/metrics/")
    assert match.func is metrics_view
    assert match.view_name == "dj_cqrs:cqrs-metrics"
