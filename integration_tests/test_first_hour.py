"""A test run does not publish to the real broker (issue 17, "The first hour").

``tests/first_hour_project`` is a new user's master service: the Quick start's ``Product``, with
``CQRS['url']`` pointing at the development RabbitMQ and a test that saves a product without any
memory fixture. A queue bound to the project's exchange shows what reached the broker:

* its own test run, under ``manage.py test`` and under pytest-django, publishes nothing: with no
  ``CQRS['transport']`` in the settings, the test runner's transport is the memory one;
* the same settings outside a test run publish (so the empty queue above means something);
* settings that name ``CQRS['transport']`` keep it under the test runner (a django-cqrs suite
  relying on its configured transport is unchanged), and a WARNING says so.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration_tests.harness import (
    OUR_PYTHON,
    RABBIT_HOST,
    RABBIT_PORT,
    CaptureQueue,
    rabbit_cleanup,
    unique,
)

PROJECT = Path(__file__).resolve().parent.parent / "tests" / "first_hour_project"
REPO = PROJECT.parent.parent
URL = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/%2F"


@pytest.fixture
def broker(rabbitmq: None) -> Iterator[tuple[str, CaptureQueue]]:
    """The project's own exchange, and a queue bound to every routing key of it."""
    exchange = unique("f17_fh")
    capture = CaptureQueue(exchange, ["#"], name=unique("f17_fh_capture"))
    try:
        yield exchange, capture
    finally:
        capture.close()
        rabbit_cleanup(exchange, [])


def run(
    args: list[str], exchange: str, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(PROJECT)]),
        "DJANGO_SETTINGS_MODULE": "fh_settings",
        "FH_URL": URL,
        "FH_EXCHANGE": exchange,
        "FH_DB": str(tmp_path / "fh.sqlite3"),
        **env,
    }
    environment.pop("FH_TRANSPORT", None)
    environment.update(env)
    return subprocess.run(
        [OUR_PYTHON, *args],
        cwd=PROJECT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_manage_py_test_publishes_nothing_to_the_broker(broker, tmp_path):
    exchange, capture = broker
    result = run(["manage.py", "test", "shop", "-v", "2"], exchange, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "TRANSPORT=MemoryTransport" in result.stdout, result.stdout + result.stderr
    assert capture.count() == 0


def test_pytest_django_publishes_nothing_to_the_broker(broker, tmp_path):
    exchange, capture = broker
    result = run(["-m", "pytest", "-c", "fh_pytest.ini", "check_publish.py"], exchange, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "TRANSPORT=MemoryTransport" in result.stdout
    assert capture.count() == 0


def test_the_same_settings_outside_a_test_run_publish_to_the_broker(broker, tmp_path):
    """The control: CQRS['url'] alone selects RabbitMQ, and the capture queue sees its events."""
    exchange, capture = broker
    migrate = run(["manage.py", "migrate", "--run-syncdb", "-v", "0"], exchange, tmp_path)
    assert migrate.returncode == 0, migrate.stderr
    save = (
        "from dj_cqrs.transport import get_transport; from shop.models import Product;"
        " Product.objects.create(name='outside', price=2); print(type(get_transport()).__name__)"
    )
    result = run(["manage.py", "shell", "-c", save], exchange, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "RabbitMQTransport"
    [(routing_key, body)] = capture.drain()
    assert routing_key == "fh_product" and b'"outside"' in body


@pytest.mark.parametrize(
    "command",
    [["manage.py", "test", "shop"], ["-m", "pytest", "-c", "fh_pytest.ini", "check_publish.py"]],
    ids=["manage.py test", "pytest-django"],
)
def test_a_transport_named_in_the_settings_is_kept_under_the_test_runner(broker, tmp_path, command):
    exchange, capture = broker
    result = run(command, exchange, tmp_path, FH_TRANSPORT="dj_cqrs.transport.RabbitMQTransport")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "TRANSPORT=RabbitMQTransport" in result.stdout
    [(routing_key, body)] = capture.drain()
    assert routing_key == "fh_product" and b'"from a test"' in body
    output = result.stdout + result.stderr
    assert (
        "Tests publish through CQRS['transport'] = 'dj_cqrs.transport.RabbitMQTransport'" in output
    )
    assert "guest:guest" not in output  # the broker is named without its password
