"""A TCP proxy on 127.0.0.1 that can partition the network the way a dead link does.

``partition()`` makes every open connection silent — nothing is forwarded any more and nothing is
closed (no FIN, no RST) — and connections accepted during the partition are never connected to
the target. ``heal()`` lets new connections through again; the silenced ones stay silent, as
connections over a link that went down do. Bounded: every thread stops with ``stop()``.
"""

from __future__ import annotations

import select
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class _Connection:
    client: socket.socket
    upstream: socket.socket | None
    silenced: bool = False


@dataclass
class TcpProxy:
    target_host: str
    target_port: int
    port: int = 0
    _listener: socket.socket | None = None
    _connections: list[_Connection] = field(default_factory=list)
    _partitioned: bool = False
    _stopped: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._spawn(self._accept_loop)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self._partitioned:
                    self._connections.append(_Connection(client, None, silenced=True))
                    continue
            try:
                upstream = socket.create_connection((self.target_host, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            connection = _Connection(client, upstream)
            with self._lock:
                self._connections.append(connection)
            self._spawn(self._pump, connection)

    def _pump(self, connection: _Connection) -> None:
        assert connection.upstream is not None
        peers = {connection.client: connection.upstream, connection.upstream: connection.client}
        while not self._stopped and not connection.silenced:
            try:
                readable, _, _ = select.select(list(peers), [], [], 0.2)
            except (OSError, ValueError):
                return
            for source in readable:
                if connection.silenced:
                    break
                try:
                    data = source.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._close(connection)
                    return
                try:
                    peers[source].sendall(data)
                except OSError:
                    self._close(connection)
                    return

    def _close(self, connection: _Connection) -> None:
        for sock in (connection.client, connection.upstream):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass

    def partition(self) -> None:
        with self._lock:
            self._partitioned = True
            for connection in self._connections:
                connection.silenced = True

    def heal(self) -> None:
        with self._lock:
            self._partitioned = False

    def stop(self) -> None:
        self._stopped = True
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            for connection in self._connections:
                self._close(connection)
        for thread in self._threads:
            thread.join(timeout=2)
