"""Write transactions on the hot path, queued fairly when the database is SQLite.

SQLite admits one writer at a time. A writer that finds the lock taken does not wait in a queue:
its busy handler sleeps and retries with growing pauses (1, 2, 5 ... 100 ms), so under load most
of the time is spent asleep while the lock is free, and tail latency reaches hundreds of
milliseconds. ``write_transaction`` instead takes an exclusive ``flock`` on a file beside the
database before ``BEGIN IMMEDIATE``: waiters sleep in the kernel and the next one wakes the moment
the lock is released, across threads and worker processes alike (each thread has its own open
file description, which ``flock`` treats as a separate holder). Writers that do not use it
(admin, management API, commands) still meet the busy handler, as before.

On PostgreSQL this is a plain ``transaction.atomic()``: row locks already queue waiters.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections, transaction

_local = threading.local()


def sqlite_file() -> str | None:
    """The default database's SQLite file; None for another database or an in-memory SQLite
    (which lives in one process: nothing to share or queue across processes)."""
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "sqlite":
        return None
    name = str(conn.settings_dict["NAME"])
    if name == ":memory:" or name.startswith("file:") or "mode=memory" in name:
        return None
    return name


def _lock_path() -> str | None:
    name = sqlite_file()
    return None if name is None else name + ".writers.lock"


class ThreadDescriptor:
    """A file descriptor owned by one thread of one process, closed when the thread ends.

    For ``flock``: a descriptor inherited over fork() would be one holder shared by parent and
    child, and one shared by threads would not exclude them from each other."""

    def __init__(self, path: str, flags: int) -> None:
        self.key = (os.getpid(), path)
        self.fd = os.open(path, flags | os.O_CLOEXEC, 0o600)

    def __del__(self) -> None:  # thread-local values are dropped when their thread ends
        if self.key[0] == os.getpid():
            os.close(self.fd)


def thread_descriptor(local: threading.local, path: str, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """This thread's descriptor for ``path`` (opened on first use in this thread and process)."""
    held = getattr(local, "descriptor", None)
    if held is None or held.key != (os.getpid(), path):
        local.descriptor = held = ThreadDescriptor(path, flags)
    return held.fd


def _lock_fd(path: str) -> int:
    return thread_descriptor(_local, path)


@contextmanager
def write_transaction(*, savepoint: bool = True) -> Iterator[None]:
    """``transaction.atomic(savepoint=...)`` for a short write, queued fairly on SQLite (see module doc)."""
    conn = connections[DEFAULT_DB_ALIAS]
    path = None if conn.in_atomic_block else _lock_path()
    if path is None:
        # PostgreSQL, an in-memory database, or already inside a transaction (which may hold
        # SQLite's lock: waiting on the file lock now could wait on ourselves).
        with transaction.atomic(savepoint=savepoint):
            yield
        return
    fd = _lock_fd(path)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with transaction.atomic(savepoint=savepoint):
            yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
