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

A request lends its slot while it waits on its upstream (``lent``, around the upstream call in
``proxy.upstream.send``): an LLM answer can take seconds to minutes, and a slot held through that
wait would let a worker run no more than ``BIFROST_THREADS`` such requests at once, every other one
queueing behind them with the worker's CPU idle. Lent, the slot runs another request meanwhile;
the waiting request takes one back (waiting for it if need be) before it goes on. So
``BIFROST_THREADS`` bounds the requests doing work at once, and the threads waiting on upstreams
are bounded by the server's threads (granian: ``BIFROST_THREADS + BIFROST_WAITING_THREADS``). A
lending thread lets its database connection go as at the end of a request, unless it is one of the
threads that keep one, so the connections stay bounded too; a thread inside a transaction does not
lend its slot.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import TYPE_CHECKING

from django.db import connections

if TYPE_CHECKING:
    from collections.abc import Sequence

    from django.db.backends.base.base import BaseDatabaseWrapper

_held = threading.local()  # ``.slots``: the Slots whose slot this thread holds, if any


class Slots:
    """A context manager: ``with slots:`` runs the request in one of ``size`` slots."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._keeping: set[int] = set()  # idents of threads that keep a database connection

    def __enter__(self) -> None:
        self._free.acquire()
        _held.slots = self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._give_back(connections.all(initialized_only=True))

    def _give_back(self, opened: Sequence[BaseDatabaseWrapper]) -> None:
        """This thread's slot, its connections (``opened``) bounded first."""
        _held.slots = None
        try:
            self._bound_connections(opened)
        finally:
            self._free.release()

    def keeping(self) -> int:
        """Threads that keep a database connection now (for tests and figures)."""
        return len(self._keeping)

    def _bound_connections(self, opened: Sequence[BaseDatabaseWrapper]) -> None:
        """``opened``: this thread's initialized connections."""
        ident = threading.get_ident()
        held = any(conn.connection is not None for conn in opened)
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
        for conn in opened:
            conn.close()


class lent:  # noqa: N801 (used as a function: ``with lent():``)
    """``with lent():`` around a wait on something outside the process (an upstream's answer):
    the slot this thread holds runs another request meanwhile and is taken back after (see the
    module doc). Without a slot (a command, a test, a thread in a transaction) it does nothing."""

    __slots__ = ("slots",)

    def __enter__(self) -> None:
        slots: Slots | None = getattr(_held, "slots", None)
        self.slots = None
        if slots is None:
            return
        opened = connections.all(initialized_only=True)
        if any(conn.in_atomic_block for conn in opened):
            return
        slots._give_back(opened)
        self.slots = slots

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.slots is not None:
            self.slots.__enter__()
