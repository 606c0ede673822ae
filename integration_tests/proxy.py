"""A small TCP proxy on the loopback interface that a test controls: cut, delay, restore.

    with TcpProxy("127.0.0.1", 5672) as proxy:      # listens on 127.0.0.1:<proxy.port>
        ...                                          # point the client at proxy.port
        proxy.cut()                                  # close every connection, refuse new ones
        proxy.restore()                              # accept again
        proxy.delay(0.2)                             # add 200 ms to every chunk forwarded

It listens on 127.0.0.1 only, forwards to a loopback target only, and every thread stops when
the proxy is closed (all waits are bounded by short select timeouts).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from typing import Any

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_TICK = 0.05
_CHUNK = 65536


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        if target_host not in _LOOPBACK:
            raise ValueError(f"TcpProxy forwards to the loopback interface only, not {target_host!r}")
        self.target = (target_host, target_port)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", listen_port))
        self._server.listen(64)
        self._server.settimeout(_TICK)
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        self._accepting = threading.Event()
        self._accepting.set()
        self._delay = 0.0
        #: Connections accepted and forwarded, and connections refused while cut.
        self.accepted = 0
        self.refused = 0
        self.cuts = 0
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True)
        self._acceptor.start()

    # -- control ---------------------------------------------------------------------------------

    def cut(self) -> None:
        """Close every forwarded connection now and refuse new ones until :meth:`restore`."""
        self._accepting.clear()
        self.cuts += 1
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _close(client)
            _close(upstream)

    def restore(self) -> None:
        """Accept and forward connections again."""
        self._accepting.set()

    def delay(self, seconds: float) -> None:
        """Wait ``seconds`` before forwarding each chunk, in both directions (0 turns it off)."""
        self._delay = max(0.0, float(seconds))

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        self._closed.set()
        self.cut()
        _close(self._server)
        self._acceptor.join(2)
        for thread in list(self._threads):
            thread.join(2)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- forwarding ------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            if not self._accepting.is_set():
                self.refused += 1
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                self.refused += 1
                _close(client)
                continue
            self.accepted += 1
            with self._lock:
                self._pairs.append((client, upstream))
            thread = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while not self._closed.is_set():
                with self._lock:
                    if (client, upstream) not in self._pairs:
                        return
                try:
                    readable, _, _ = select.select([client, upstream], [], [], _TICK)
                except (OSError, ValueError):
                    return
                for sock in readable:
                    try:
                        data = sock.recv(_CHUNK)
                    except OSError:
                        return
                    if not data:
                        return
                    if self._delay:
                        time.sleep(self._delay)
                    try:
                        peers[sock].sendall(data)
                    except OSError:
                        return
        finally:
            with self._lock:
                with contextlib.suppress(ValueError):
                    self._pairs.remove((client, upstream))
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
