from __future__ import annotations

from typing import Any, Iterator

import pytest

from integration_tests.harness import (
    OUR_PYTHON,
    PG_HOST,
    PG_PORT,
    RABBIT_HOST,
    RABBIT_PORT,
    Service,
    drop_templates,
    pg_database,
    rabbit_cleanup,
    require,
    unique,
)


def pytest_collection_modifyitems(items: list[Any]) -> None:
    for item in items:
        if "integration_tests" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _drop_template_databases() -> Iterator[None]:
    yield
    drop_templates()


@pytest.fixture
def rabbitmq() -> None:
    require(RABBIT_HOST, RABBIT_PORT, "RabbitMQ")


@pytest.fixture
def postgres() -> None:
    require(PG_HOST, PG_PORT, "PostgreSQL")


class Fleet:
    """A master service and a replica service sharing a fresh exchange, each with its own DB."""

    def __init__(self, master: Service, replica: Service, exchange: str, queue: str) -> None:
        self.master = master
        self.replica = replica
        self.exchange = exchange
        self.queue = queue


def make_fleet(master_python: str, replica_python: str, extra_env: dict[str, str] | None = None) -> Iterator[Fleet]:
    run = unique("it")
    exchange, queue = f"cqrs_{run}", f"replica_{run}"
    base = {"IT_CQRS_EXCHANGE": exchange, "IT_CQRS_QUEUE": queue, **(extra_env or {})}
    with pg_database(f"{run}_master") as master_db, pg_database(f"{run}_replica") as replica_db:
        master = Service("master", master_python, {**base, "IT_DB_NAME": master_db})
        replica = Service("replica", replica_python, {**base, "IT_DB_NAME": replica_db})
        master.migrate()
        replica.migrate()
        try:
            yield Fleet(master, replica, exchange, queue)
        finally:
            master.stop_all()
            replica.stop_all()
            rabbit_cleanup(exchange, [queue, f"dead_letter_{queue}"])


@pytest.fixture
def fleet(rabbitmq: None, postgres: None) -> Iterator[Fleet]:
    yield from make_fleet(OUR_PYTHON, OUR_PYTHON)


# The django-cqrs 3.1.0 peer (and our python) for every integration test, not only compat/.
from integration_tests.compat.conftest import compat_python, our_python  # noqa: E402,F401
