"""``connection_parameters()``: what the RabbitMQ transport makes of ``CQRS['url']`` (or the legacy
``host``/``port``/``user``/``password`` keys), TLS verification included. No broker needed: the
TLS tests talk to a tiny TLS server on the loopback interface with a throwaway certificate."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pika
import pytest
from django.test import override_settings

from dj_cqrs.checks import check_settings
from dj_cqrs.exceptions import ConfigurationError, ConnectionFailed
from dj_cqrs.transport.rabbit_connection import connection_parameters, open_blocking_connection
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
from tests.unit.conftest import cqrs_with


def rabbit(**changes):
    return override_settings(CQRS=cqrs_with(transport="dj_cqrs.transport.RabbitMQTransport", **changes))


def params_for(url=None, **legacy) -> pika.ConnectionParameters:
    with rabbit(url=url, **legacy):
        return connection_parameters()


# -- amqp:// URLs --------------------------------------------------------------------------------


def test_url_parts_are_all_used():
    params = params_for("amqp://user:pass@broker.internal:5673/vhost?heartbeat=10&connection_attempts=2")
    assert params.host == "broker.internal"
    assert params.port == 5673
    assert isinstance(params.credentials, pika.PlainCredentials)
    assert (params.credentials.username, params.credentials.password) == ("user", "pass")
    assert params.virtual_host == "vhost"
    assert params.heartbeat == 10
    assert params.connection_attempts == 2
    assert params.ssl_options is None


@pytest.mark.parametrize(
    ("path", "vhost"),
    [("/%2F", "/"), ("/my%2Fvhost", "my/vhost"), ("/caf%C3%A9", "café"), ("/", "/"), ("", "/")],
)
def test_virtual_host_is_url_decoded(path, vhost):
    assert params_for(f"amqp://guest:guest@127.0.0.1:5672{path}").virtual_host == vhost


def test_credentials_are_url_decoded():
    params = params_for("amqp://us%40er:p%3Ass%2Fw%40rd@127.0.0.1/%2F")
    assert (params.credentials.username, params.credentials.password) == ("us@er", "p:ss/w@rd")


def test_defaults_for_missing_url_parts():
    params = params_for("amqp://rabbit")
    assert (params.host, params.port, params.virtual_host) == ("rabbit", 5672, "/")
    assert (params.credentials.username, params.credentials.password) == ("guest", "guest")


def test_other_query_options_are_honoured():
    params = params_for(
        "amqp://h/%2F?socket_timeout=3&blocked_connection_timeout=15&channel_max=7&frame_max=8192&retry_delay=0.5"
    )
    assert params.socket_timeout == 3
    assert params.blocked_connection_timeout == 15
    assert params.channel_max == 7
    assert params.frame_max == 8192
    assert params.retry_delay == 0.5


def test_blocked_connection_timeout_has_a_default():
    # A broker in flow control (memory/disk alarm) must not block a committing request forever.
    assert params_for("amqp://h/").blocked_connection_timeout == 60


def test_connection_is_named_after_the_purpose_host_and_pid():
    import os

    name = params_for("amqp://h/").client_properties["connection_name"]
    assert name.startswith("dj_cqrs producer ")
    assert name.endswith(f"{socket.gethostname()}:{os.getpid()}")
    with rabbit(url="amqp://h/"):
        assert connection_parameters("consumer").client_properties["connection_name"].startswith("dj_cqrs consumer ")


def test_client_properties_from_the_url_are_kept():
    value = quote("{'connection_name': 'billing replica', 'team': 'billing'}")
    properties = params_for(f"amqp://h/?client_properties={value}").client_properties
    assert properties["connection_name"] == "billing replica"
    assert properties["team"] == "billing"
    assert properties["product"] == "dj_cqrs"


# -- amqps:// ------------------------------------------------------------------------------------


def test_amqps_verifies_the_certificate_and_the_host_name():
    params = params_for("amqps://user:pass@broker.example.com/prod")
    assert params.port == 5671
    assert params.ssl_options is not None
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert params.ssl_options.server_hostname == "broker.example.com"
    assert params.virtual_host == "prod"


def test_amqps_with_ssl_options_in_the_query_still_verifies(tmp_path):
    value = quote(repr({"capath": str(tmp_path)}))
    params = params_for(f"amqps://broker.example.com:5671/?ssl_options={value}")
    assert params.ssl_options.context.verify_mode == ssl.CERT_REQUIRED
    assert params.ssl_options.context.check_hostname is True
    assert params.ssl_options.server_hostname == "broker.example.com"


def test_an_explicit_server_hostname_is_kept(tmp_path):
    value = quote(repr({"capath": str(tmp_path), "server_hostname": "rabbit.internal"}))
    params = params_for(f"amqps://10.0.0.5:5671/?ssl_options={value}")
    assert params.ssl_options.server_hostname == "rabbit.internal"


# -- legacy keys ---------------------------------------------------------------------------------


def test_legacy_host_port_user_password():
    params = params_for(None, host="rabbit.local", port=5673, user="svc", password="secret")
    assert (params.host, params.port) == ("rabbit.local", 5673)
    assert (params.credentials.username, params.credentials.password) == ("svc", "secret")
    assert params.virtual_host == "/"
    assert params.ssl_options is None
    assert params.client_properties["connection_name"].startswith("dj_cqrs producer ")


def test_legacy_keys_default_to_pika_defaults():
    params = params_for(None)
    assert (params.host, params.port) == ("localhost", 5672)
    assert (params.credentials.username, params.credentials.password) == ("guest", "guest")


def test_legacy_user_without_password():
    params = params_for(None, host="h", user="svc")
    assert (params.credentials.username, params.credentials.password) == ("svc", "")


def test_url_wins_over_legacy_keys():
    params = params_for("amqp://u:p@from-url:5680/v", host="legacy", port=1, user="x", password="y")
    assert (params.host, params.port, params.credentials.username) == ("from-url", 5680, "u")


# -- bad URLs ------------------------------------------------------------------------------------

BAD_URLS = [
    "redis://127.0.0.1:6379/0",
    "amqp://host:notaport/",
    "amqp://h/%2F?heartbeat=notanumber",
    "amqp://h/%2F?no_such_option=1",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_url_is_system_check_e011(url):
    with rabbit(url=url):
        errors = check_settings()
    assert [e.id for e in errors] == ["dj_cqrs.E011"]
    assert "amqp://" in errors[0].hint


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_url_at_run_time_is_a_configuration_error_with_the_check_id(url):
    with rabbit(url=url), pytest.raises(ConfigurationError, match="dj_cqrs.E011"):
        connection_parameters()


def test_bad_url_is_e011_for_a_rabbitmq_transport_subclass():
    with override_settings(CQRS=cqrs_with(transport=f"{__name__}.CustomRabbit", url="amqp://h:bad/")):
        assert [e.id for e in check_settings()] == ["dj_cqrs.E011"]


class CustomRabbit(RabbitMQTransport):
    pass


# -- a real TLS handshake on the loopback interface ----------------------------------------------


def _make_cert(directory: Path, name: str, san: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a throwaway certificate")
    directory = tmp_path_factory.mktemp("tls")
    return {
        "loopback": _make_cert(directory, "loopback", "IP:127.0.0.1"),
        "other": _make_cert(directory, "other", "DNS:other.example"),
    }


@contextlib.contextmanager
def tls_server(cert: Path, key: Path) -> Iterator[tuple[int, list[str]]]:
    """A TLS server on 127.0.0.1 that accepts connections for a few seconds and records how each
    handshake ended ("handshake ok" or the error); it closes right after the handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    outcomes: list[str] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                continue
            client.settimeout(5)
            try:
                with context.wrap_socket(client, server_side=True):
                    outcomes.append("handshake ok")
            except (OSError, ssl.SSLError) as exc:
                outcomes.append(repr(exc))
                client.close()

    thread = threading.Thread(target=serve, name="tls-server", daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], outcomes
    finally:
        done.set()
        thread.join(6)
        server.close()


def _connect(url: str) -> ConnectionFailed:
    with rabbit(url=url), pytest.raises(ConnectionFailed) as info:
        open_blocking_connection("test")
    return info.value


QUERY = "connection_attempts=1&socket_timeout=3&stack_timeout=5"


def test_tls_handshake_fails_on_an_untrusted_certificate(certs):
    cert, key = certs["loopback"]
    with tls_server(cert, key) as (port, outcomes):
        error = _connect(f"amqps://guest:guest@127.0.0.1:{port}/%2F?{QUERY}")
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    assert "self-signed certificate" in str(error.__cause__)
    assert len(outcomes) == 1 and "handshake ok" not in outcomes


def test_tls_handshake_fails_on_a_host_name_mismatch(certs):
    cert, key = certs["other"]  # trusted, but issued for other.example, not 127.0.0.1
    trust = quote(repr({"ca_certs": str(cert)}))
    with tls_server(cert, key) as (port, outcomes):
        error = _connect(f"amqps://guest:guest@127.0.0.1:{port}/%2F?{QUERY}&ssl_options={trust}")
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    assert "mismatch" in str(error.__cause__)
    assert "handshake ok" not in outcomes


def test_tls_handshake_succeeds_with_a_trusted_certificate_for_the_host(certs):
    cert, key = certs["loopback"]
    trust = quote(repr({"ca_certs": str(cert)}))
    with tls_server(cert, key) as (port, outcomes):
        # The handshake passes; the server then hangs up (it speaks no AMQP), so connecting fails
        # after TLS, not because of it.
        error = _connect(f"amqps://guest:guest@127.0.0.1:{port}/%2F?{QUERY}&ssl_options={trust}")
    assert outcomes == ["handshake ok"]
    assert not isinstance(error.__cause__, ssl.SSLError)
