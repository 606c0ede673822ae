"""The replica side of HTTP pull (dj_cqrs.http.client, dj_cqrs.http.pull, cqrs_pull): pages
applied through the replica batch path, the cursor stored and resumed, errors and retries."""

from __future__ import annotations

import io
import urllib.error
import urllib.parse

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client

from dj_cqrs.http import pull
from dj_cqrs.http.client import MasterUnavailable, PullClient, PullRefused
from dj_cqrs.models import PullCursor
from dj_cqrs.process.lifecycle import Backoff, StopFlag
from tests.apps.master_app.models import SimplestModel
from tests.apps.replica_app.models import AlwaysFailing, FlakyModelRef, SimplestModelRef
from tests.unit.http.conftest import TOKEN

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("pull_settings")]

MOUNT = "http://master.test/cqrs/"


class DjangoClient(PullClient):
    """A PullClient whose requests go through Django's test client instead of the network."""

    def __init__(self, *args, fail=(), **kwargs):
        kwargs.setdefault("backoff", Backoff(initial=0.0, maximum=0.0))
        super().__init__(MOUNT, *args, **kwargs)
        self.django = Client()
        self.requests = []
        self.fail = list(fail)

    def get(self, url):
        self.requests.append(url)
        if self.fail:
            problem = self.fail.pop(0)
            if isinstance(problem, int):
                raise urllib.error.HTTPError(
                    url, problem, "failed", {}, io.BytesIO(b'{"detail": "down"}')
                )
            raise problem
        parts = urllib.parse.urlsplit(url)
        response = self.django.get(
            parts.path,
            dict(urllib.parse.parse_qsl(parts.query)),
            headers={"Authorization": f"Bearer {self.token}"},
        )
        if response.status_code >= 400:
            raise urllib.error.HTTPError(
                url, response.status_code, "error", {}, io.BytesIO(response.content)
            )
        return response.content


def replica_state():
    return dict(SimplestModelRef.objects.values_list("pk", "name"))


def master_state():
    return dict(SimplestModel.objects.values_list("pk", "name"))


def test_pull_seeds_then_follows_changes_and_resumes():
    rows = [SimplestModel.objects.create(name=f"n{i}") for i in range(25)]
    client = DjangoClient(TOKEN)
    pages = []
    result = pull.run(client, "simplest", limit=10, on_page=lambda n, done: pages.append((n, done)))
    assert replica_state() == master_state()
    assert result.caught_up and not result.stopped
    # 3 snapshot pages (10, 10, 5), then the feed read to its end (the creates are before the head).
    assert pages == [(10, False), (10, False), (5, False), (0, True)]
    stored = PullCursor.objects.get(source=MOUNT, cqrs_id="simplest")
    assert stored.items == 25 and stored.caught_up and stored.cursor

    rows[0].name = "changed"
    rows[0].save()
    rows[1].delete()
    SimplestModel.objects.create(name="new")
    # A new run (a restarted process) resumes from the stored cursor: only the 3 changes.
    result = pull.run(DjangoClient(TOKEN), "simplest", limit=10)
    assert result.items == 3 and result.pages == 1
    assert replica_state() == master_state()
    assert PullCursor.objects.get(source=MOUNT, cqrs_id="simplest").items == 28
    # A replica row already newer than a pulled item is left alone (revision rules).
    SimplestModelRef.objects.filter(pk=rows[2].pk).update(name="newer", cqrs_revision=5)
    pull.run(DjangoClient(TOKEN), "simplest", reset=True)
    assert SimplestModelRef.objects.get(pk=rows[2].pk).name == "newer"


def test_values_arrive_exactly():
    import datetime
    import decimal
    import uuid

    from tests.apps.master_app.models import AllTypesModel
    from tests.apps.replica_app.models import AllTypesModelRef

    values = {
        "text": 'Grüße ☕ "q" \\ \n',
        "decimal": decimal.Decimal("12345678901234567890.12345678901234567891"),
        "time": datetime.time(1, 2, 3, 456789),
        "duration": datetime.timedelta(days=2, microseconds=7),
        "binary": b"\x00\xff",
        "json": {"a": [1, 2.5, None], "b": "x"},
        "uuid": uuid.UUID(int=5),
    }
    obj = AllTypesModel.objects.create(**values)
    pull.run(DjangoClient(TOKEN), "all_types")
    copy = AllTypesModelRef.objects.get(pk=obj.pk)
    stored = AllTypesModel.objects.get(pk=obj.pk)  # SQLite keeps decimals as floats
    for name, value in values.items():
        got, master = getattr(copy, name), getattr(stored, name)
        if name == "binary":
            got, master = bytes(got), bytes(master)
        assert got == master, name
        if connection.vendor == "postgresql":
            assert got == value, name


def test_follow_polls_until_stopped():
    SimplestModel.objects.create(name="a")
    stop = StopFlag()
    client = DjangoClient(TOKEN, stop=stop)
    polls = []

    def on_page(items, caught_up):
        polls.append(items)
        if len(polls) == 3:
            SimplestModel.objects.create(name="b")
        if len(polls) == 5:
            stop.set()

    result = pull.run(client, "simplest", follow=True, interval=0.01, stop=stop, on_page=on_page)
    assert result.stopped and result.caught_up
    assert polls[:2] == [1, 0] and sum(polls) == 2
    assert replica_state() == master_state()


def test_retries_connection_errors_and_5xx_then_gives_up():
    SimplestModel.objects.create(name="a")
    client = DjangoClient(
        TOKEN, retries=3, fail=[urllib.error.URLError("refused"), 502, TimeoutError()]
    )
    assert pull.run(client, "simplest").items == 1
    assert len(client.requests) == 5  # 3 failures, then the snapshot page and the feed page
    dead = DjangoClient(TOKEN, retries=2, fail=[503] * 10)
    with pytest.raises(MasterUnavailable, match="failed 3 time"):
        dead.fetch("simplest", None)
    assert len(dead.requests) == 3


def test_refusals_are_not_retried():
    client = DjangoClient("wrong")
    with pytest.raises(PullRefused) as info:
        pull.run(client, "simplest")
    assert info.value.status == 401 and len(client.requests) == 1
    with pytest.raises(PullRefused) as info:
        DjangoClient(TOKEN).fetch("simplest", "garbage")
    assert info.value.status == 400 and "bad cursor" in info.value.detail


def _body(cqrs_id, pk, name):
    return {
        "signal_type": "SAVE",
        "cqrs_id": cqrs_id,
        "instance_data": {
            "id": pk,
            "name": name,
            "cqrs_revision": 0,
            "cqrs_updated": "2024-01-01T00:00:00+00:00",
        },
        "previous_data": None,
        "instance_pk": pk,
        "correlation_id": None,
        "retries": 0,
        "expires": None,
        "meta": {},
    }


def test_failing_items_are_retried_per_policy_then_stop_the_pull():
    FlakyModelRef.fail_times = 2
    pull.apply_items([_body("simplest_flaky", 1, "x")], "simplest_flaky", StopFlag())
    assert FlakyModelRef.attempts == 3
    assert FlakyModelRef.objects.get(pk=1).name == "x"
    with pytest.raises(pull.ApplyFailed, match="could not be applied"):
        pull.apply_items([_body("always_failing", 1, "x")], "always_failing", StopFlag())
    assert len(AlwaysFailing.attempts) == 4  # CQRS_MAX_RETRIES = 3 in the test settings


def test_command(monkeypatch):
    SimplestModel.objects.create(name="a")
    monkeypatch.setenv("PULL_TOKEN_T", TOKEN)
    monkeypatch.setattr(
        "dj_cqrs.management.commands.cqrs_pull.PullClient", DjangoClient.for_command
    )
    err = io.StringIO()
    call_command("cqrs_pull", url=MOUNT, cqrs_id="simplest", token_env="PULL_TOKEN_T", stderr=err)
    assert "1 item(s) applied in 2 page(s); caught up." in err.getvalue()
    assert replica_state() == master_state()
    with pytest.raises(CommandError, match="No replica model"):
        call_command("cqrs_pull", url=MOUNT, cqrs_id="nope", token_env="PULL_TOKEN_T")
    with pytest.raises(CommandError, match="token is missing"):
        call_command("cqrs_pull", url=MOUNT, cqrs_id="simplest", token_env="PULL_TOKEN_UNSET")
    monkeypatch.setenv("PULL_TOKEN_T", "wrong")
    with pytest.raises(CommandError, match="HTTP 401"):
        call_command(
            "cqrs_pull", url=MOUNT, cqrs_id="simplest", token_env="PULL_TOKEN_T", no_progress=True
        )


def _for_command(url, token, **kwargs):
    assert url == MOUNT
    return DjangoClient(token, **kwargs)


DjangoClient.for_command = staticmethod(_for_command)


def test_command_after_the_retention_says_to_reset(monkeypatch):
    import time

    from django.test import override_settings

    from dj_cqrs.http import cursor as cursor_mod
    from tests.unit.http.conftest import cqrs_with

    SimplestModel.objects.create(name="a")
    monkeypatch.setenv("PULL_TOKEN_T", TOKEN)
    monkeypatch.setattr(
        "dj_cqrs.management.commands.cqrs_pull.PullClient", DjangoClient.for_command
    )
    stale = cursor_mod.Cursor("simplest", cursor_mod.FEED, 0, None, 0, time.time() - 3600)
    pull.cursor_row(MOUNT, "simplest")
    PullCursor.objects.filter(cqrs_id="simplest").update(cursor=stale.encode())
    options = {
        "url": MOUNT,
        "cqrs_id": "simplest",
        "token_env": "PULL_TOKEN_T",
        "no_progress": True,
    }
    with override_settings(
        CQRS=cqrs_with(master={"outbox_retention": 600}, http={"tokens": [TOKEN]})
    ):
        with pytest.raises(CommandError, match="HTTP 410.*--reset"):
            call_command("cqrs_pull", **options)
        err = io.StringIO()
        call_command("cqrs_pull", reset=True, stderr=err, **options)
    assert "1 item(s) applied in 2 page(s); caught up." in err.getvalue()
    assert replica_state() == master_state()


@pytest.mark.parametrize(
    "args",
    [
        ("--interval", "-1"),
        ("--interval", "nan"),
        ("--timeout", "0"),
        ("--retries", "-1"),
        ("--limit", "0"),
    ],
)
def test_command_refuses_bad_numbers(monkeypatch, args):
    # Regression: `--interval -1 --follow` polled the master without any pause (a busy loop);
    # `--timeout 0` made every request fail; `--retries -1` was taken as 0.
    monkeypatch.setenv("PULL_TOKEN_T", TOKEN)
    with pytest.raises(CommandError, match=args[0]):
        call_command("cqrs_pull", "--url", MOUNT, "--cqrs-id", "simplest", *args)


def test_command_refuses_a_url_without_scheme(monkeypatch):
    # Regression: "master:8000/cqrs/" was tried --retries times with back-off, then failed with
    # "unknown url type".
    monkeypatch.setenv("PULL_TOKEN_T", TOKEN)
    with pytest.raises(CommandError, match="http:// or https://"):
        call_command(
            "cqrs_pull", url="127.0.0.1:8000/cqrs/", cqrs_id="simplest", token_env="PULL_TOKEN_T"
        )
