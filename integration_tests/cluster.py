"""A three-node RabbitMQ cluster started on this machine for the tests that need one.

Separate from the machine's own RabbitMQ (5672): each node is a ``rabbitmq-server`` of the
installed RabbitMQ with

* its own node name ``djcqrs<pytest pid>x<random>n<i>@localhost`` (never the name of a leftover
  of an earlier run, nor of a run in another checkout);
* its own AMQP and distribution ports (free ports picked at start: ``RABBITMQ_NODE_PORT`` in its
  config file, ``RABBITMQ_DIST_PORT``), no management listener;
* its own folders under one temporary directory (``RABBITMQ_MNESIA_BASE``, ``RABBITMQ_LOG_BASE``,
  ``RABBITMQ_CONFIG_FILE``, ``RABBITMQ_ENABLED_PLUGINS_FILE`` enabling
  ``rabbitmq_consistent_hash_exchange``, an empty ``RABBITMQ_CONF_ENV_FILE`` so that the machine's
  ``/etc/rabbitmq/rabbitmq-env.conf`` does not rename it);
* a shared Erlang cookie in a ``HOME`` of the temporary directory (for the nodes and for
  ``rabbitmqctl``).

Nodes 2 and 3 join node 1 with ``rabbitmqctl stop_app``, ``join_cluster``, ``start_app``. Every
wait has a deadline and fails with the node's log tail. Tear-down always runs: the nodes are
stopped (SIGTERM, then SIGKILL), any beam process still carrying one of their names is killed, and
the directory is removed. Leftovers of a run whose pytest process is gone (killed before its
tear-down) are removed at the next start.

The ``rabbit_cluster`` fixture (module scope: starting three nodes costs about 10-20 s of a
two-core machine) skips when ``rabbitmq-server`` is not installed or the cluster cannot start,
and fails instead under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from integration_tests.harness import in_ci

#: Where the installed RabbitMQ's scripts are (the Debian package's; /usr/sbin wraps them with
#: ``su rabbitmq``, which would run the node as the machine's RabbitMQ user).
SBIN_CANDIDATES = (
    os.environ.get("IT_RABBITMQ_SBIN", ""),
    "/usr/lib/rabbitmq/bin",
    "/usr/local/sbin",
    "/usr/sbin",
    "/opt/homebrew/sbin",
    "/usr/local/opt/rabbitmq/sbin",
)
NODE_PREFIX = "djcqrs"
DIR_PREFIX = "djcqrs-cluster-"
_NAME = re.compile(rf"\b{NODE_PREFIX}(\d+)x[0-9a-f]+n\d+@localhost\b")
START_TIMEOUT = float(os.environ.get("IT_CLUSTER_START_TIMEOUT", "90"))
CTL_TIMEOUT = 60.0


def sbin() -> Path | None:
    for candidate in SBIN_CANDIDATES:
        if (
            candidate
            and (Path(candidate) / "rabbitmq-server").exists()
            and (Path(candidate) / "rabbitmqctl").exists()
        ):
            return Path(candidate)
    found = shutil.which("rabbitmq-server")
    return Path(found).resolve().parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def amqp_answers(port: int) -> bool:
    """A full AMQP handshake (login included) succeeds on ``port``."""
    import pika

    try:
        connection = pika.BlockingConnection(
            pika.ConnectionParameters(
                "127.0.0.1", port, connection_attempts=1, socket_timeout=2, stack_timeout=5
            )
        )
    except Exception:  # noqa: BLE001 - not up yet
        return False
    with contextlib.suppress(Exception):
        connection.close()
    return True


def _beam_processes() -> list[tuple[int, str]]:
    """``(pid, command line)`` of every running Erlang VM."""
    result = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "beam" in cmdline.split(" ", 1)[0]:
            result.append((int(entry.name), cmdline))
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_leftovers() -> list[str]:
    """Kill the nodes of runs whose pytest process is gone and remove their folders; the names
    of the nodes killed."""
    killed = []
    for pid, cmdline in _beam_processes():
        match = _NAME.search(cmdline)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.append(match.group(0))
    for folder in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*"):
        owner = folder.name[len(DIR_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
    return killed


class ClusterError(RuntimeError):
    """The cluster could not be started (the message carries the node's log tail)."""


@dataclass
class Node:
    index: int
    name: str
    port: int
    dist_port: int
    base: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def stdout_path(self) -> Path:
        return self.base / f"stdout.{self.starts}.log"

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for path in [self.stdout_path, *sorted((self.base / "log").glob("*.log"))]:
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()
                parts.append(f"--- {path} (last {lines} lines)\n" + "\n".join(text[-lines:]))
        return "\n".join(parts) or "(no log written)"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def beam_pids(self) -> list[int]:
        """Erlang VMs running this node (its own process, or a stray one carrying its name)."""
        pattern = re.compile(rf"\b{re.escape(self.name)}\b")
        return [pid for pid, cmdline in _beam_processes() if pattern.search(cmdline)]


@dataclass
class RabbitCluster:
    """Three RabbitMQ nodes joined in a cluster; see the module docstring."""

    root: Path
    sbin: Path
    nodes: list[Node] = field(default_factory=list)
    #: Seconds the last :meth:`start` took (all nodes up and joined).
    start_seconds: float = 0.0

    @classmethod
    def create(cls, size: int = 3) -> RabbitCluster:
        scripts = sbin()
        if scripts is None:
            raise ClusterError(
                "rabbitmq-server is not installed (set IT_RABBITMQ_SBIN to its sbin folder)"
            )
        sweep_leftovers()
        owner = os.getpid()
        tag = secrets.token_hex(3)
        root = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{owner}-"))
        home = root / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        (root / "enabled_plugins").write_text("[rabbitmq_consistent_hash_exchange].\n")
        (root / "rabbitmq-env.conf").write_text("")
        cluster = cls(root=root, sbin=scripts)
        for i in range(1, size + 1):
            base = root / f"n{i}"
            base.mkdir()
            port, dist_port = free_port(), free_port()
            (base / "rabbitmq.conf").write_text(
                "\n".join(
                    [
                        f"listeners.tcp.1 = 127.0.0.1:{port}",
                        "log.console = false",
                        "log.file.level = info",
                        "disk_free_limit.absolute = 10MB",
                        "",
                    ]
                )
            )
            name = f"{NODE_PREFIX}{owner}x{tag}n{i}@localhost"
            env = cluster.base_env()
            env.update(
                RABBITMQ_NODENAME=name,
                RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                RABBITMQ_NODE_PORT=str(port),
                RABBITMQ_DIST_PORT=str(dist_port),
                RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
                RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
                RABBITMQ_ENABLED_PLUGINS_FILE=str(root / "enabled_plugins"),
                RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
                RABBITMQ_LOG_BASE=str(base / "log"),
                RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            )
            cluster.nodes.append(Node(i, name, port, dist_port, base, env))
        return cluster

    def base_env(self) -> dict[str, str]:
        """The environment of a node or of ``rabbitmqctl``: the cookie's HOME, no machine-wide
        rabbitmq-env.conf, nothing inherited that would point at the machine's node."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.root / "home"),
            RABBITMQ_CONF_ENV_FILE=str(self.root / "rabbitmq-env.conf"),
        )
        return env

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    # -- nodes ---------------------------------------------------------------------------------

    def launch(self, node: Node) -> None:
        """Start ``node``'s ``rabbitmq-server`` (returns at once)."""
        node.starts += 1
        with open(node.stdout_path, "wb") as out:  # noqa: SIM115 - the child keeps its own descriptor
            node.process = subprocess.Popen(
                [str(self.sbin / "rabbitmq-server")],
                env=node.env,
                cwd=node.base,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_up(self, node: Node, deadline: float) -> None:
        """Wait until ``node`` answers AMQP; ``ClusterError`` with its log tail at the deadline or
        if it exits."""
        while time.monotonic() < deadline:
            if node.process is not None and node.process.poll() is not None:
                raise ClusterError(
                    f"RabbitMQ node {node.name} exited with {node.process.returncode} while starting\n{node.log_tail()}"
                )
            if port_open(node.port) and amqp_answers(node.port):
                return
            time.sleep(0.2)
        raise ClusterError(
            f"RabbitMQ node {node.name} did not answer on port {node.port} in time\n{node.log_tail()}"
        )

    def ctl(self, node: Node, *args: str, timeout: float = CTL_TIMEOUT, check: bool = True) -> str:
        """``rabbitmqctl -n <node> ...``; its stdout. ``ClusterError`` when it fails (if ``check``)."""
        try:
            result = subprocess.run(
                [str(self.sbin / "rabbitmqctl"), "-n", node.name, *args],
                env=self.base_env(),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(
                f"rabbitmqctl -n {node.name} {' '.join(args)} timed out\n{node.log_tail()}"
            ) from exc
        if check and result.returncode != 0:
            raise ClusterError(
                f"rabbitmqctl -n {node.name} {' '.join(args)} exited {result.returncode}:"
                f" {result.stdout[-2000:]}{result.stderr[-2000:]}\n{node.log_tail()}"
            )
        return result.stdout

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every node, join nodes 2.. to node 1, check that all are running."""
        began = time.monotonic()
        deadline = began + timeout
        for node in self.nodes:
            self.launch(node)
        for node in self.nodes:
            self.wait_up(node, deadline)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        for node in self.nodes:
            self.wait_up(node, deadline)
        self.wait_running(len(self.nodes), deadline)
        self.start_seconds = time.monotonic() - began

    def running_nodes(self, via: Node | None = None) -> list[str]:
        node = via or next(n for n in self.nodes if n.running())
        status = json.loads(self.ctl(node, "cluster_status", "--formatter", "json"))
        return sorted(status.get("running_nodes", []))

    def wait_running(self, count: int, deadline: float) -> None:
        last: list[str] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(ClusterError, ValueError, StopIteration):
                last = self.running_nodes()
                if len(last) >= count:
                    return
            time.sleep(0.5)
        raise ClusterError(
            f"the cluster has {len(last)} running node(s) {last}, not {count}\n"
            + "\n".join(node.log_tail(20) for node in self.nodes)
        )

    def kill(self, node: Node) -> None:
        """SIGKILL the node (as a crash of its machine would end it)."""
        for pid in node.beam_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if node.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(10)
        deadline = time.monotonic() + 10
        while port_open(node.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self, node: Node, timeout: float = START_TIMEOUT) -> float:
        """Start a killed node again (it rejoins the cluster from its data folder); seconds taken."""
        began = time.monotonic()
        self.launch(node)
        deadline = began + timeout
        self.wait_up(node, deadline)
        self.wait_running(len(self.nodes), deadline)
        return time.monotonic() - began

    def node_named(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def queue_leader(self, queue: str) -> Node:
        """The node leading quorum queue ``queue`` (asked on a running node)."""
        via = next(n for n in self.nodes if n.running())
        rows = json.loads(
            self.ctl(via, "list_queues", "name", "type", "leader", "--formatter", "json", "-q")
        )
        for row in rows:
            if row.get("name") == queue:
                if not row.get("leader"):
                    raise ClusterError(f"queue {queue!r} has no leader: {row}")
                return self.node_named(str(row["leader"]))
        raise ClusterError(
            f"queue {queue!r} not found on {via.name}: {[r.get('name') for r in rows]}"
        )

    def queues(self) -> list[dict[str, Any]]:
        """Every queue: name, type, messages (ready, unacknowledged), consumers, leader."""
        via = next(n for n in self.nodes if n.running())
        columns = [
            "name",
            "type",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
            "leader",
        ]
        return list(json.loads(self.ctl(via, "list_queues", *columns, "--formatter", "json", "-q")))

    # -- tear-down -----------------------------------------------------------------------------

    def stop(self, grace: float = 10.0) -> None:
        """Stop every node (SIGTERM, SIGKILL after ``grace``), kill stray VMs of their names,
        remove the folder. Safe to call more than once."""
        for node in self.nodes:
            if node.running():
                assert node.process is not None
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(10)
        for node in self.nodes:
            for pid in node.beam_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if os.environ.get("IT_CLUSTER_KEEP") == "1":  # the logs and data, for a post-mortem
            print(f"\nIT_CLUSTER_KEEP=1: the cluster's folders are kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(size: int = 3) -> RabbitCluster:
    """A started cluster, or ``ClusterError`` (the nodes already started are torn down)."""
    cluster = RabbitCluster.create(size)
    try:
        cluster.start()
    except BaseException:
        cluster.stop(grace=0)
        raise
    return cluster


def running_cluster() -> Iterator[RabbitCluster]:
    """A started three-node cluster, torn down when the generator is closed; skips (fails under
    ``CI=true``) when it cannot start. The body of the :func:`rabbit_cluster` fixture."""
    try:
        cluster = start_cluster()
    except (ClusterError, OSError) as exc:
        message = f"cannot start a three-node RabbitMQ cluster: {exc}"
        if in_ci():
            pytest.fail(message + "\n(CI=true requires it)", pytrace=False)
        pytest.skip(message)
    print(
        f"\nthree-node RabbitMQ cluster up in {cluster.start_seconds:.1f} s: {', '.join(cluster.urls)}"
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """A three-node RabbitMQ cluster for the tests of a module (see the module docstring)."""
    yield from running_cluster()
