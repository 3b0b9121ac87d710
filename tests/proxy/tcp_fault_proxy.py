"""A loopback TCP proxy that a fault test can cut and restore, to take a server "down" without touching it.

``TcpFaultProxy(target_port)`` listens on a free port of 127.0.0.1 and relays every connection to
``target_host:target_port`` byte for byte (one thread per direction). ``cut()`` makes the server
look dead to whoever connects through the proxy: every open connection is reset at once (the
client's next read fails, as when a server crashes) and new connections are refused (the
listening socket is closed, so ``connect`` gets ECONNREFUSED at once instead of hanging).
``restore()`` listens again on the same port. The real server never notices more than its
clients disconnecting.

Used by the fault tests to cut the gateway off from PostgreSQL while the shared server keeps
running for everything else.
"""

from __future__ import annotations

import socket
import struct
import threading

HOST = "127.0.0.1"
BUFFER = 65536


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0): the peer sees a reset connection, not an orderly end.

    ``shutdown`` first: closing a socket does not wake a thread blocked in ``recv`` on it.
    """
    for step in (
        lambda: sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)),
        lambda: sock.shutdown(socket.SHUT_RDWR),
        sock.close,
    ):
        try:
            step()
        except OSError:
            pass


class TcpFaultProxy:
    """Relay 127.0.0.1:``port`` -> ``target_host``:``target_port``; ``cut()`` / ``restore()`` it."""

    def __init__(self, target_port: int, target_host: str = HOST) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._listener: socket.socket | None = None
        self._closed = False
        self.connections = 0  # accepted since start, for tests that check the proxy was used
        self.port = self._listen(0)

    # --- control -----------------------------------------------------------------------------
    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, set()
        if listener is not None:
            # shutdown() stops listening even while the accept thread is blocked in accept()
            # (close() alone would leave the port accepting until that call returns).
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for client, server in pairs:
            _reset(client)
            _reset(server)

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        with self._lock:
            if self._listener is not None or self._closed:
                return
        self._listen(self.port)

    def close(self) -> None:
        self._closed = True
        self.cut()

    # --- relay --------------------------------------------------------------------------------
    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, port))
        listener.listen(128)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="tcp-fault-proxy", daemon=True).start()
        return listener.getsockname()[1]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut() closed the listener
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            pair = (client, server)
            with self._lock:
                if self._listener is not listener:  # cut while this connection was being set up
                    _reset(client)
                    _reset(server)
                    return
                self._pairs.add(pair)
                self.connections += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink, pair), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pair: tuple[socket.socket, socket.socket]) -> None:
        try:
            while True:
                data = source.recv(BUFFER)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            known = pair in self._pairs
            self._pairs.discard(pair)
        if known:  # an orderly end from one side: end the other side too
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
