#!/usr/bin/env python
"""dj_cqrs in a browser: ``make demo-web``.

Starts, with no other setup, the master service (``examples/master_service``: its JSON API and
``manage.py cqrs_relay``) and the replica service (``examples/replica_service``: its JSON API
and ``manage.py cqrs_consume``), on SQLite and kombu's server-less ``filesystem://`` broker as
``make demo`` does (``DEMO_BROKER_URL`` and ``DEMO_DATABASE_URL`` point both at RabbitMQ, Redis
and PostgreSQL), then serves the console (``examples/web_console``) and prints its one URL on
127.0.0.1. The page shows the master's products and the replica's copies side by side, each
event as it flows (committed, published, applied), the outbox, the replica's lag and its dead
letters, with switches to stop the consumer and to cut the broker.

Ctrl+C (or SIGTERM) stops every process it started and removes a real broker's queues.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from demo import (
    EPILOG,
    MASTER_DIR,
    REPLICA_DIR,
    Broker,
    DemoError,
    Service,
    _ready,
    _rel,
    databases,
    migrate,
    prepare_workdir,
    say,
)

EXAMPLES = Path(__file__).resolve().parent
DEFAULT_WORKDIR = EXAMPLES / ".demo-web"
DEFAULT_PORT = 8765
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "redis": 6379, "rediss": 6379}
SEED = [
    ("Oak desk", "249.00"),
    ("Desk lamp", "39.90"),
    ("Office chair", "189.00"),
    ("Bookshelf", "129.50"),
    ("Monitor stand", "45.00"),
    ("Cable tray", "19.90"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Any, timeout: float, processes: list[Any]) -> None:
    """Wait until ``check()`` is true; fail early when one of ``processes`` exited."""
    deadline = time.monotonic() + timeout
    while not check():
        for process in processes:
            if not process.running:
                raise DemoError(f"{process.label} exited; see {_rel(process.log)}")
        if time.monotonic() > deadline:
            raise DemoError(f"{what} not ready within {timeout:g}s")
        time.sleep(0.2)


def answers(api: Any) -> bool:
    from web_console.runtime import ServiceDown

    try:
        code, _ = api.call("/demo/state", timeout=5)
    except ServiceDown:
        return False
    return code == 200


def console_app() -> Any:
    """The console's WSGI application (Django settings made here: it has no database)."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY=secrets.token_hex(32),
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        INSTALLED_APPS=["django.contrib.staticfiles", "web_console"],
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        ],
        ROOT_URLCONF="web_console.urls",
        TEMPLATES=[
            {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
        ],
        STATIC_URL="/static/",
        DATABASES={},
        USE_TZ=True,
        SECURE_CONTENT_TYPE_NOSNIFF=True,
        SECURE_REFERRER_POLICY="same-origin",
    )
    django.setup()
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.wsgi import get_wsgi_application

    return StaticFilesHandler(get_wsgi_application())


def serve(app: Any, port: int) -> Any:
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        allow_reuse_address = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass

    try:
        return make_server("127.0.0.1", port, app, server_class=Server, handler_class=Quiet)
    except OSError as exc:
        raise DemoError(
            f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); pass another --port"
        ) from exc


@contextlib.contextmanager
def broker_switch(
    broker: Broker, workdir: Path
) -> Iterator[tuple[Any, dict[str, str], dict[str, str]]]:
    """The switch, and the environment of the master and of the replica that goes with it."""
    from web_console.proxy import TcpProxy
    from web_console.runtime import BrokerSwitch

    if broker.filesystem:
        flag = workdir / "broker-cut"
        master_env = {
            "DEMO_CQRS_TRANSPORT": "inventory.switch.SwitchedKombuTransport",
            "DEMO_BROKER_SWITCH": str(flag),
        }
        yield BrokerSwitch(flag=flag), master_env, {}
        return
    parts = urlparse(broker.url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    if port is None:
        raise DemoError(
            f"DEMO_BROKER_URL {broker.describe()}: give the port to put the demo's proxy in front of it"
        )
    proxy = TcpProxy(parts.hostname or "127.0.0.1", port)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = (credentials + "@" if credentials else "") + f"127.0.0.1:{proxy.port}"
    env = {"DEMO_CQRS_URL": urlunparse(parts._replace(netloc=netloc))}
    try:
        yield BrokerSwitch(proxy=proxy), env, env
    finally:
        proxy.close()


def seed(master: Any) -> None:
    for name, price in SEED:
        code, answer = master.call("/demo/products", {"name": name, "price": price})
        if code != 200:
            raise DemoError(f"could not create the first products: {answer}")


def run(args: argparse.Namespace) -> int:
    from web_console import runtime

    started = time.monotonic()
    workdir = Path(args.workdir).resolve()
    run_id = uuid.uuid4().hex[:8]
    # The page's port first: a port in use fails before anything is started.
    server = serve(console_app(), args.port)
    prepare_workdir(workdir)
    broker = Broker(os.environ.get("DEMO_BROKER_URL"), workdir, run_id)
    base_env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    base_env.update(PYTHONUNBUFFERED="1", DEMO_WORKDIR=str(workdir), **broker.env())
    say("dj_cqrs demo-web: a master service and a replica service, in a browser")
    say(f"  broker     {broker.describe()}, exchange {broker.exchange}, queue {broker.queue}")
    broker.prepare()
    processes: list[runtime.ManagedProcess] = []
    try:
        with (
            broker_switch(broker, workdir) as (switch, master_env, replica_env),
            databases(os.environ.get("DEMO_DATABASE_URL"), workdir, run_id) as (
                master_db,
                replica_db,
                db_text,
            ),
        ):
            say(f"  databases  {db_text}")
            master = Service("master", MASTER_DIR, {**base_env, **master_db, **master_env})
            replica = Service(
                "replica",
                REPLICA_DIR,
                {
                    **base_env,
                    **replica_db,
                    **replica_env,
                    "DEMO_OUTCOME_LOG": str(workdir / "replica-outcomes.jsonl"),
                },
            )
            say("  migrating both databases ...")
            migrate([master, replica], timeout=120)
            master_port, replica_port = free_port(), free_port()

            def managed(
                label: str, service: Service, log: str, *command: str
            ) -> runtime.ManagedProcess:
                process = runtime.ManagedProcess(
                    label, service.command(*command), service.directory, service.env, workdir / log
                )
                processes.append(process)
                return process

            apis = (
                runtime.Api("master", f"http://127.0.0.1:{master_port}"),
                runtime.Api("replica", f"http://127.0.0.1:{replica_port}"),
            )
            managed(
                "the master's API",
                master,
                "master-web.log",
                "runserver",
                "--noreload",
                f"127.0.0.1:{master_port}",
            )
            managed(
                "the replica's API",
                replica,
                "replica-web.log",
                "runserver",
                "--noreload",
                f"127.0.0.1:{replica_port}",
            )
            consumer = managed(
                "the replica's consumer",
                replica,
                "replica-consumer.log",
                "cqrs_consume",
                "--workers",
                "1",
            )
            managed(
                "the master's relay",
                master,
                "master-relay.log",
                "cqrs_relay",
                "--interval",
                "0.5",
                "--no-webhooks",
            )
            for process in processes:
                process.start()
            say("  starting the master (API, cqrs_relay) and the replica (API, cqrs_consume) ...")
            wait_for("the replica's queue", lambda: _ready(broker), args.timeout, processes)
            wait_for(
                "the services' APIs",
                lambda: all(answers(api) for api in apis),
                args.timeout,
                processes,
            )
            seed(apis[0])

            def flush_outbox() -> None:
                """``cqrs_relay --once`` in the background: publish what the outbox kept now."""

                def relay_once() -> None:
                    with open(workdir / "master-relay.log", "ab") as log:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            subprocess.run(  # noqa: S603 - our own manage.py
                                master.command(
                                    "cqrs_relay", "--once", "--min-age", "0", "--no-webhooks"
                                ),
                                cwd=master.directory,
                                env=master.env,
                                stdout=log,
                                stderr=subprocess.STDOUT,
                                timeout=120,
                            )

                threading.Thread(target=relay_once, name="demo-relay-once", daemon=True).start()

            runtime.install(
                runtime.Runtime(
                    master=apis[0],
                    replica=apis[1],
                    consumer=consumer,
                    switch=switch,
                    flush_outbox=flush_outbox,
                    facts={
                        "broker": broker.describe(),
                        "databases": db_text,
                        "queue": broker.queue,
                        "workdir": _rel(workdir),
                    },
                )
            )
            port = server.server_address[1]
            say(f"  logs       {_rel(workdir)}/*.log")
            say(f"  ready in {time.monotonic() - started:.1f}s; Ctrl+C stops everything")
            say(f"open http://127.0.0.1:{port}/")
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
            ).start()
            stop = threading.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stop.set())
            while not stop.wait(1):
                for process in processes:
                    if process is not consumer and not process.running:
                        raise DemoError(f"{process.label} exited; see {_rel(process.log)}")
            say("stopping ...")
            server.shutdown()
    finally:
        server.server_close()
        for process in reversed(processes):
            process.stop()
        broker.cleanup()
    say("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="examples/demo_web.py",
        description="Serve dj_cqrs's demo in a browser: a master and a replica service side by side.",
        epilog=EPILOG.replace("make demo", "make demo-web"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port of the page on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free port)",
    )
    parser.add_argument(
        "--workdir",
        default=str(DEFAULT_WORKDIR),
        help="work dir for the databases, the broker folder and the logs, wiped at the start"
        " (default examples/.demo-web)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the services to start (default 60)",
    )
    args = parser.parse_args(argv)
    try:
        return run(args)
    except DemoError as exc:
        say(f"ERROR: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 1


if __name__ == "__main__":
    sys.exit(main())
