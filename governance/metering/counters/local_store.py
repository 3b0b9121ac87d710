"""A table of counters in a memory-mapped file, shared by every worker process on one host.

The embedded mode's hot counters (``governance.metering.counters.local_backend``) live here instead of in
Redis: the same records (usage, window anchor, generation, epoch, watermark, expiry) under the
same rules, read and written by every gunicorn worker and thread of every gateway process that
uses the same database. The file sits beside the SQLite database (``<database>.counters``), or is
``BIFROST_DATA_DIR/counters.table`` for PostgreSQL (``counters.local_table_path``).

- **Atomic**: every operation runs under an exclusive ``flock`` on the file, taken after a lock of
  the process (so one thread per process waits in the kernel). Each thread opens its own
  descriptor (``flock`` treats each open file description as a holder), so the lock excludes
  threads of one process as well as other processes, and waiters sleep in the kernel until the
  holder is done. The critical sections are a few struct reads and writes.
- **Layout**: a header (magic, epoch) and a fixed number of 64-byte slots, open addressing with
  linear probing from the key's hash. A key is the 16-byte BLAKE2b digest of the counter's name.
  A slot whose expiry has passed reads as absent and is reused by the next insert.
- **Disposable**: everything here can be rebuilt from the database (the ledger keeps the rows up
  to date), so a full table or an unreadable file makes the caller fall back to the database
  counters instead of failing; a file of another format is reset on open.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
from dataclasses import dataclass, field

from governance.metering.sqlite_lock import thread_descriptor

MAGIC = b"BFCNT001"
HEADER = struct.Struct("<8sq")  # magic, epoch
SLOT = struct.Struct("<16sqqqqqq")  # key, usage, anchor ms, generation, epoch, watermark, expiry ms
HEADER_SIZE = 64
SLOTS = 1 << 16  # 4 MiB; live counters are bounded by configured budgets and rate limits
MAX_PROBE = 256
EMPTY = bytes(16)
INT64 = (1 << 63) - 1
WHERE_MAX = 100_000  # remembered slot offsets per process (see ``Table``)


class StoreError(Exception):
    """The table cannot serve this call (full, or the file cannot be used)."""


@dataclass(slots=True)
class Record:
    usage: int
    anchor: int
    generation: int
    epoch: int
    watermark: int
    expiry: int
    # Where ``Table.get`` found it, so ``put`` writes it back there without a search; not its value.
    offset: int = field(default=-1, compare=False, repr=False)


def key_digest(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=16).digest()


def _clamp(value: int) -> int:
    return max(-INT64, min(INT64, int(value)))


class Table:
    """The view of the table an operation gets while it holds the lock.

    ``where`` remembers, per process, the slot each key was last found in: a key never moves
    while its slot holds it, so a hit costs one read and a check of the key; a slot reused by
    another key (after expiry) fails the check and the key is probed for again."""

    __slots__ = ("buf", "slots", "where")

    def __init__(self, buf: mmap.mmap, slots: int, where: dict[bytes, int] | None = None) -> None:
        self.buf, self.slots = buf, slots
        self.where = {} if where is None else where

    @property
    def epoch(self) -> int:
        return HEADER.unpack_from(self.buf, 0)[1]

    def set_epoch(self, epoch: int) -> None:
        HEADER.pack_into(self.buf, 0, MAGIC, epoch)

    def _find(self, key: bytes, now_ms: int) -> tuple[int, tuple | None]:
        """``(offset, slot)`` of ``key``'s slot, or ``(offset, None)`` with the slot an insert
        would take (the first empty or expired one on the way; -1 when there is none)."""
        offset = self.where.get(key)
        if offset is not None:
            slot = SLOT.unpack_from(self.buf, offset)
            if slot[0] == key:
                return offset, slot
            del self.where[key]
        start = int.from_bytes(key[:8], "little") % self.slots
        free = -1
        for step in range(min(MAX_PROBE, self.slots)):
            offset = HEADER_SIZE + ((start + step) % self.slots) * SLOT.size
            slot = SLOT.unpack_from(self.buf, offset)
            if slot[0] == key:
                self._remember(key, offset)
                return offset, slot
            if free < 0 and (slot[0] == EMPTY or slot[6] <= now_ms):
                free = offset
            if slot[0] == EMPTY:
                break
        return free, None

    def _remember(self, key: bytes, offset: int) -> None:
        if len(self.where) >= WHERE_MAX:
            self.where.clear()
        self.where[key] = offset

    def get(self, key: bytes, now_ms: int) -> Record | None:
        offset, slot = self._find(key, now_ms)
        if slot is None or slot[6] <= now_ms:
            return None
        return Record(slot[1], slot[2], slot[3], slot[4], slot[5], slot[6], offset)

    def put(self, key: bytes, record: Record, now_ms: int) -> None:
        offset = record.offset
        if offset < 0 or self.buf[offset : offset + len(key)] != key:
            offset, _ = self._find(key, now_ms)
        if offset < 0:
            raise StoreError("the counter table is full")
        SLOT.pack_into(
            self.buf,
            offset,
            key,
            _clamp(record.usage),
            record.anchor,
            record.generation,
            record.epoch,
            record.watermark,
            record.expiry,
        )
        self._remember(key, offset)

    def delete(self, key: bytes) -> None:
        offset, slot = self._find(key, 0)
        if slot is not None:
            SLOT.pack_into(self.buf, offset, key, *slot[1:6], 0)  # expired: reads as absent


class SharedTable:
    """The table in ``path`` (or in private memory when ``path`` is None: one process only)."""

    def __init__(self, path: str | None, slots: int = SLOTS) -> None:
        self.path, self.slots = path, slots
        self.size = HEADER_SIZE + slots * SLOT.size
        self._local = threading.local()
        self._maps: dict[int, mmap.mmap] = {}
        self._maps_lock = threading.Lock()
        self._private_lock = threading.Lock()
        self._where: dict[bytes, int] = {}

    def _map(self) -> mmap.mmap:
        pid = os.getpid()
        found = self._maps.get(pid)
        if found is not None:
            return found
        with self._maps_lock:
            found = self._maps.get(pid)
            if found is None:
                found = self._open()
                self._maps = {pid: found}  # a map inherited over fork() is the parent's, not ours
                self._where = {}
                if self.path is not None:  # nor is a lock a thread of the parent may have held
                    self._private_lock = threading.Lock()
        return found

    def _open(self) -> mmap.mmap:
        if self.path is None:
            buf = mmap.mmap(-1, self.size)
            HEADER.pack_into(buf, 0, MAGIC, 0)
            return buf
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                fresh = os.fstat(fd).st_size != self.size or os.pread(fd, len(MAGIC), 0) != MAGIC
                if fresh:
                    # New, or written by another format or table size: start empty (the
                    # counters are rebuilt from the database on first use).
                    os.ftruncate(fd, 0)
                    os.ftruncate(fd, self.size)
                    os.pwrite(fd, HEADER.pack(MAGIC, 0), 0)
                return mmap.mmap(fd, self.size)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)  # the map keeps the file; locking uses per-thread descriptors

    def _lock_fd(self, path: str) -> int:
        return thread_descriptor(self._local, path, os.O_RDWR)

    def locked(self) -> Locked:
        """Exclusive use of the table for one operation: ``with shared.locked() as table:``."""
        return Locked(self)


class Locked:
    """``SharedTable.locked``: a class rather than a ``contextmanager`` generator, whose own
    machinery cost more than the lock on a path that takes it for every governed request."""

    __slots__ = ("shared", "lock", "fd")

    def __init__(self, shared: SharedTable) -> None:
        self.shared = shared
        self.fd = -1

    def __enter__(self) -> Table:
        shared = self.shared
        try:
            buf = shared._map()
            # The process's threads queue on a lock of their own first: a released flock wakes
            # every waiter in the kernel, and with dozens of threads waiting each release cost
            # them all a wake-up and a lost race (governed req/s +15-25 %).
            self.lock = lock = shared._private_lock
            lock.acquire()
            if shared.path is not None:
                try:
                    fd = shared._lock_fd(shared.path)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    lock.release()
                    raise
                self.fd = fd
        except (OSError, ValueError) as exc:
            raise StoreError(f"counter table unusable: {type(exc).__name__}") from exc
        return Table(buf, shared.slots, shared._where)

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.fd >= 0:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.lock.release()
