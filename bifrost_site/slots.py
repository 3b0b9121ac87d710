"""Request slots: at most ``BIFROST_THREADS`` requests of a worker run at once, and at most as many
of its threads keep a database connection between requests.

Under granian a worker has more threads than slots (``BIFROST_WAITING_THREADS``), so that requests
whose bodies arrive slowly wait on threads of their own (``bifrost_site.wsgi``). Django keeps one
database connection per thread for ``CONN_MAX_AGE``: left alone, every thread that ever ran a
request could keep one, up to the thread count of every worker, past what PostgreSQL allows. So
when a request gives its slot back, its thread keeps its connection only while fewer than
``size`` threads keep one; otherwise the connection is closed (the next request on that thread
opens another). Under gunicorn the threads are the slots, so taking one never waits and no
thread ever has to let its connection go.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType

from django.db import connections


class Slots:
    """A context manager: ``with slots:`` runs the request in one of ``size`` slots."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._keeping: set[int] = set()  # idents of threads that keep a database connection

    def __enter__(self) -> None:
        self._free.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            self._bound_connections()
        finally:
            self._free.release()

    def keeping(self) -> int:
        """Threads that keep a database connection now (for tests and figures)."""
        return len(self._keeping)

    def _bound_connections(self) -> None:
        ident = threading.get_ident()
        held = any(conn.connection is not None for conn in connections.all(initialized_only=True))
        with self._lock:
            if not held:
                self._keeping.discard(ident)
                return
            if ident in self._keeping:
                return
            if len(self._keeping) >= self.size:
                # Threads that ended (granian stops idle ones) took their connections with them.
                self._keeping &= set(sys._current_frames())
            if len(self._keeping) < self.size:
                self._keeping.add(ident)
                return
        for conn in connections.all(initialized_only=True):
            conn.close()
