"""Leases: every reservation names the process holding it, so a dead process's reservations get settled.

Every admission holds a **lease** that its settle removes; the lease reaper
(``governance.metering.reaper``) settles the reservations whose owner is dead.

- **Owner.** Each process that admits (``<host>-<pid>-<random>``) keeps a **lease file** ``flock``-ed
  for its whole life: a sparse memory-mapped file of ``SLOTS`` slots, one per open admission, in
  ``<sqlite file>.leases/<counters>/`` or ``BIFROST_DATA_DIR/leases/<database>/<counters>/``
  (``<counters>``: ``local``, ``database`` or ``redis-<url hash>``). The kernel drops the lock when
  the process dies, SIGKILL included, so on the same host a successful non-blocking ``flock``
  proves the owner dead: no heartbeat to wait for, no pid reuse to fear. Owners on other hosts are
  judged by a heartbeat: the reaper thread re-registers its owner in Redis (``bf:gov:owners``, a
  sorted set scored by expiry) and renews its database leases' ``expires_at`` every third of
  ``GOVERNANCE_LEASE_SECONDS``.
- **Where the lease lives** is where the reservation lives, written in the same atomic step: in the
  admit Lua script (``HSET bf:gov:lease:<owner> <request id> <payload>``, removed by the settle
  script), in the owner's slot inside the local table's critical section, or as a ``CounterLease``
  row in the admit transaction (deleted in the settle transaction). The payload holds what
  settling needs: counters, the windows reserved in, estimates and the request's ledger fields.
- **Was the upstream reached?** The request thread marks its slot ``CALLED`` just before the
  upstream call. A reaper on the same host reads the mark: marked -> charged its reservation
  (worst-case cost and tokens, one request); not marked -> released. A reaper on another host
  cannot read it and charges (``upstream_reached`` unknown). A worker killed while *connecting*
  counts as reached.
- **Exactly once.** The ledger's unique ``request_id`` decides the database side: whoever writes the
  UsageRecord (the owner's settle, a journal replay or the reaper) charges the rows. The lease
  decides the hot side: the reaper applies the record's amounts only if it removes the lease, and
  leaves a tombstone (``bf:gov:reaped:<request id>``) so that a late settle of the same request
  does not apply them again.

Accepted, bounded imprecision: a kill inside the few-microsecond critical section of a local-table
admit or settle can leave the slot and the counters out of step; a process past ``SLOTS`` open
admissions, or without a lease file, admits without a local slot (logged; no mark: reaped as
reached; with the local table, no lease at all: counted until the window resets); a database
admission whose worker dies between its settle's commit and the hot copy's settle leaves the hot
copy short of that request's amount until the next rebuild (the rows and the ledger have it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import mmap
import os
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, overload

from django.conf import settings
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, connections
from django.dispatch import receiver

from governance.metering.counters.base import BUDGET, REQUESTS, TOKENS, Counter

logger = logging.getLogger("bifrost.leases")

MAGIC = b"BFLEASE1"
HEADER_SIZE = 64
SLOT_SIZE = 4096
SLOTS = 4096  # 16 MiB of address space per process; sparse: only slots in use take pages
SLOT_HEAD = struct.Struct("<BxxxI16s")  # state, payload length, request id
PAYLOAD_MAX = SLOT_SIZE - SLOT_HEAD.size
FREE, ADMITTED, CALLED = 0, 1, 2
SUFFIX = ".lease"

_KIND = {BUDGET: "b", TOKENS: "t", REQUESTS: "r"}
_KIND_NAME = {code: kind for kind, code in _KIND.items()}
# Fields of the ledger entry a reaped request's UsageRecord keeps (ids, names; never a secret).
ENTRY_FIELDS = (
    "provider",
    "model",
    "virtual_key_id",
    "team_id",
    "customer_id",
    "provider_key_id",
    "request_type",
    "streamed",
    "priced",
    "price_source",
)


@dataclass(frozen=True, slots=True)
class Lease:
    """Where an admission's lease lives: kept on the ``Admission`` (and journaled with it)."""

    owner: str  # the process that admitted
    key: str  # the request id it is filed under
    slot: int = -1  # its slot in the owner's lease file (-1: none)
    db_id: int = 0  # the ``CounterLease`` row of a database admission


@dataclass(slots=True)
class PendingLease:
    """A lease about to be taken: what ``admit`` hands to a counter backend."""

    owner: str
    key: str
    slot: int
    payload: str
    until_ms: int  # the owner's registration lasts until then unless renewed (wall clock)

    def lease(self, db_id: int = 0) -> Lease:
        return Lease(self.owner, self.key, self.slot, db_id)


# --- payloads ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payload:
    """What a lease records about its admission (``encode`` / ``decode``)."""

    counters: tuple[Counter, ...]
    estimated_cost: Decimal
    estimated_tokens: int
    admitted_at: datetime
    entry: dict[str, Any]


_quote = json.encoder.encode_basestring  # the C implementation: a JSON string literal
_entries: dict[tuple, str] = {}  # ledger fields -> their JSON: few distinct ones (key, model...)


def encode(
    counters: tuple[Counter, ...] | list[Counter],
    estimated_cost: Decimal,
    estimated_tokens: int,
    admitted_at: datetime,
    entry: Any = None,
) -> str:
    """Compact JSON: counters (kind, id, duration, alignment: the reservation on each follows from
    the estimates), estimates, admission time (ms) and the ledger entry's fields. The backend
    appends the admission's marks after a newline (see ``hot_marks``, ``database_marks``). Built
    by hand: this runs on every governed request, where ``json.dumps`` of the same takes ~4x."""
    parts = ",".join([_counter_json(c) for c in counters])
    millis = int(admitted_at.timestamp() * 1000)
    text = f'{{"c":[{parts}],"ec":{_quote(str(estimated_cost))},"et":{int(estimated_tokens)},"t":{millis}'
    if entry is not None:
        text += ',"e":' + _entry_json(entry)
    return text + "}"


_counters: dict[tuple, str] = {}


def _counter_json(c: Counter) -> str:
    key = (c.spec_id, c.kind, c.duration, c.calendar_aligned)
    found = _counters.get(key)
    if found is None:
        if len(_counters) > 65536:
            _counters.clear()
        found = _counters[key] = (
            f"[{_quote(_KIND[c.kind])},{_quote(c.spec_id)},{_quote(c.duration)},{1 if c.calendar_aligned else 0}]"
        )
    return found


def _entry_json(entry: Any) -> str:
    values = tuple(getattr(entry, name, None) for name in ENTRY_FIELDS)
    found = _entries.get(values)
    if found is None:
        fields = {}
        for name, value in zip(ENTRY_FIELDS, values, strict=True):
            if value is not None:
                fields[name] = value if isinstance(value, bool | int | str) else str(value)
        if len(_entries) > 4096:
            _entries.clear()
        found = _entries[values] = json.dumps(fields, separators=(",", ":"))
    return found


def decode(text: str) -> tuple[Payload, str]:
    """The payload and the marks text its backend appended to it."""
    body, _, hot_marks = text.partition("\n")
    data = json.loads(body)
    estimated_cost, estimated_tokens = Decimal(data["ec"]), int(data["et"])
    reserves: dict[str, Decimal | int] = {
        BUDGET: max(estimated_cost, Decimal("0")),
        TOKENS: max(estimated_tokens, 0),
        REQUESTS: 1,
    }
    counters = []
    for code, spec_id, duration, calendar in data["c"]:
        kind = _KIND_NAME[code]
        # Limit and entity play no part in settling (only in admitting and in refusals).
        counters.append(Counter(kind, spec_id, "", 0, duration, bool(calendar), reserves[kind]))
    payload = Payload(
        tuple(counters),
        estimated_cost,
        estimated_tokens,
        datetime.fromtimestamp(data["t"] / 1000, tz=UTC),
        dict(data.get("e", {})),
    )
    return payload, hot_marks


def database_marks_text(marks: tuple[datetime | None, ...] | list[datetime | None]) -> str:
    return json.dumps([None if m is None else m.isoformat() for m in marks], separators=(",", ":"))


def database_marks(text: str) -> tuple[datetime | None, ...]:
    """The windows (row anchors) a database admission reserved in."""
    return tuple(None if m is None else datetime.fromisoformat(m) for m in json.loads(text))


def hot_marks(text: str, *, integer_generation: bool) -> tuple[tuple[Any, int], ...]:
    """``(generation, anchor ms)`` per counter from ``"g,a;g,a"`` (Redis keeps generations as text,
    the local table as integers)."""
    out = []
    for part in text.split(";") if text else ():
        generation, anchor = part.split(",")
        out.append((int(generation) if integer_generation else generation, int(anchor)))
    return tuple(out)


# --- lease files ---------------------------------------------------------------------------------


def _key_bytes(key: str) -> bytes:
    """A request id's 16 bytes (``uuid.UUID(key).bytes`` at a fifth of the cost)."""
    return bytes.fromhex(key.replace("-", ""))


class LeaseFile:
    """A mapped lease file: one process's own, or a dead owner's that a reaper holds locked."""

    def __init__(self, path: Path, fd: int, buf: mmap.mmap) -> None:
        self.path, self.fd, self.buf = path, fd, buf

    @overload
    @classmethod
    def open(cls, path: Path, *, create: bool, lock: Literal[False] = False) -> LeaseFile: ...

    @overload
    @classmethod
    def open(cls, path: Path, *, create: bool, lock: bool) -> LeaseFile | None: ...

    @classmethod
    def open(cls, path: Path, *, create: bool, lock: bool = False) -> LeaseFile | None:
        """Map ``path`` (a new file with ``create``). With ``lock``, first take its lock without
        waiting, and answer None if someone holds it (its owner lives, or another reaper has it)."""
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if lock:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    return None
            size = HEADER_SIZE + SLOTS * SLOT_SIZE
            if create:
                os.ftruncate(fd, size)  # sparse: pages appear as slots are used
                os.pwrite(fd, MAGIC, 0)
            elif os.fstat(fd).st_size != size or os.pread(fd, len(MAGIC), 0) != MAGIC:
                raise ValueError(f"{path.name} is not a lease file of this format")
            return cls(path, fd, mmap.mmap(fd, size))
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def offset(slot: int) -> int:
        return HEADER_SIZE + slot * SLOT_SIZE

    def write(self, slot: int, key: str, payload: bytes, state: int) -> bool:
        """Fill a slot; the state byte goes last, so a reader never sees a half-written slot."""
        if len(payload) > PAYLOAD_MAX:
            return False
        offset = self.offset(slot)
        self.buf[offset] = FREE
        self.buf[offset + SLOT_HEAD.size : offset + SLOT_HEAD.size + len(payload)] = payload
        SLOT_HEAD.pack_into(self.buf, offset, FREE, len(payload), _key_bytes(key))
        self.buf[offset] = state
        return True

    def mark(self, slot: int, state: int) -> None:
        self.buf[self.offset(slot)] = state

    def holds(self, slot: int, key: str) -> bool:
        """Whether the slot holds a lease (with a payload) for request ``key``."""
        state, length, raw = SLOT_HEAD.unpack_from(self.buf, self.offset(slot))
        return state != FREE and length > 0 and raw == _key_bytes(key)

    def clear(self, slot: int) -> None:
        offset = self.offset(slot)
        self.buf[offset] = FREE
        SLOT_HEAD.pack_into(self.buf, offset, FREE, 0, bytes(16))

    def entries(self) -> Iterator[tuple[int, int, str, str | None]]:
        """``(slot, state, request id, payload or None)`` of every slot in use."""
        for slot in range(SLOTS):
            offset = self.offset(slot)
            state, length, raw = SLOT_HEAD.unpack_from(self.buf, offset)
            if state == FREE:
                continue
            payload = None
            if 0 < length <= PAYLOAD_MAX:
                payload = bytes(self.buf[offset + SLOT_HEAD.size : offset + SLOT_HEAD.size + length]).decode()
            yield slot, state, str(uuid.UUID(bytes=raw)), payload

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.buf.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


class Book:
    """This process's lease file and its free slots."""

    def __init__(self, directory: Path, owner: str) -> None:
        self.owner, self.directory = owner, directory
        self.path = directory / f"{owner}{SUFFIX}"
        self.file = LeaseFile.open(self.path, create=True)
        # Held until the process dies: the kernel drops it then, which is how others know.
        fcntl.flock(self.file.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.pid = os.getpid()
        self._lock = threading.Lock()
        # Last freed first: the slots in use stay on the same few pages.
        self._free = list(range(SLOTS - 1, -1, -1))
        self._taken: dict[int, str] = {}  # slot -> request id: a settle replayed twice frees once
        self._full_logged = False

    def take(self, key: str) -> int:
        """A slot marked ``ADMITTED`` for request ``key``, or -1 when every slot is in use."""
        with self._lock:
            if not self._free:
                if not self._full_logged:
                    self._full_logged = True
                    logger.warning("lease file full: further admissions carry no local lease slot")
                return -1
            slot = self._free.pop()
            self._taken[slot] = key
        self.file.write(slot, key, b"", ADMITTED)
        return slot

    def mark(self, slot: int, key: str, state: int) -> None:
        if self._taken.get(slot) == key:
            self.file.mark(slot, state)

    def give_back(self, slot: int, key: str) -> None:
        """Free the slot if it is still ``key``'s (not yet freed, not taken again since)."""
        with self._lock:
            if self._taken.get(slot) != key:
                return
            del self._taken[slot]
            self.file.clear(slot)
            self._free.append(slot)

    def in_use(self) -> int:
        return len(self._taken)


_lock = threading.Lock()
_books: dict[int, Book | None] = {}  # the current one, by pid: a book inherited over fork() is the parent's
_opened: dict[tuple[int, Path], Book | None] = {}  # every one this process opened, by directory


def owner_name() -> str:
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:60] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def directory() -> Path | None:
    """The lease directory of the default database and the hot counters in use (None for an
    in-memory SQLite database). A reaper settles a dead owner's leases from the stores of its own
    configuration, so the files of owners using another Redis (or none) are not its to judge."""
    from governance.metering.counters import hot_counters
    from governance.metering.sqlite_lock import sqlite_file

    conn = connections[DEFAULT_DB_ALIAS]
    hot = hot_counters()
    if hot is None:
        counters = "database"
    elif hot.name == "local":
        counters = "local"
    else:
        counters = "redis-" + hashlib.sha256(str(settings.REDIS_URL).encode()).hexdigest()[:12]
    if conn.vendor == "sqlite":
        name = sqlite_file()
        return None if name is None else Path(name + ".leases") / counters
    db = conn.settings_dict
    # Engine and name only: host and port may differ between processes (a proxy, a replica name).
    ident = hashlib.sha256(f"{db['ENGINE']}|{db['NAME']}".encode()).hexdigest()[:16]
    return Path(settings.DATA_DIR) / "leases" / f"{conn.vendor}-{ident}" / counters


def book() -> Book | None:
    """This process's lease book (created on first use), or None when leases cannot be kept here
    (no lease directory, or it cannot be written: logged once; admissions then work as before)."""
    pid = os.getpid()
    found: Book | None | Literal[False] = _books.get(pid, False)
    if found is not False:
        return found
    with _lock:
        if pid not in _books:
            path = directory()
            made: Book | None = None
            if path is not None:
                opened: Book | None | Literal[False] = _opened.get((pid, path), False)
                if opened is False:
                    try:
                        path.mkdir(parents=True, exist_ok=True, mode=0o700)
                        made = Book(path, owner_name())
                    except OSError as exc:
                        logger.error(
                            "cannot keep lease files in %s (%s): reservations of a dead process stay", path, exc
                        )
                    _opened[(pid, path)] = made
                else:
                    made = opened
            _books.clear()
            _books[pid] = made
    return _books[pid]


def own_book(owner: str) -> Book | None:
    """This process's book of that owner (the current one, or one opened under other settings)."""
    current = _books.get(os.getpid())
    if current is not None and current.owner == owner:
        return current
    for (pid, _), opened in list(_opened.items()):
        if opened is not None and pid == os.getpid() and opened.owner == owner:
            return opened
    return None


def prepare(
    request_id: str,
    counters: list[Counter],
    estimated_cost: Decimal,
    estimated_tokens: int,
    now: datetime,
    entry: Any,
    lease_seconds: float,
) -> PendingLease | None:
    """A slot and a payload for the admission about to be made (None without a lease book)."""
    current = book()
    if current is None:
        return None
    payload = encode(counters, estimated_cost, estimated_tokens, now, entry)
    # Room for the marks the backend appends (a generation and an anchor, or a timestamp, each).
    if len(payload) + 48 * len(counters) > PAYLOAD_MAX:
        # Without the ledger fields: a reaped record then names no key, provider or model.
        payload = encode(counters, estimated_cost, estimated_tokens, now, None)
        if len(payload) + 48 * len(counters) > PAYLOAD_MAX:
            logger.warning("reservation too large for a lease", extra={"counters": len(counters)})
            return None
    until_ms = int((time.time() + lease_seconds) * 1000)
    return PendingLease(current.owner, request_id, current.take(request_id), payload, until_ms)


def cancel(pending: PendingLease | None) -> None:
    """The admission was refused or failed: free its slot."""
    if pending is not None and pending.slot >= 0:
        own = own_book(pending.owner)
        if own is not None:
            own.give_back(pending.slot, pending.key)


def mark_called(lease: Lease | None) -> None:
    """The worker is about to call the upstream for this admission (one byte in its own file)."""
    if lease is None or lease.slot < 0:
        return
    own = own_book(lease.owner)
    if own is not None:
        own.mark(lease.slot, lease.key, CALLED)


def finished(lease: Lease | None) -> None:
    """The admission is settled (or released): its slot is free again."""
    if lease is None or lease.slot < 0:
        return
    own = own_book(lease.owner)
    if own is not None:
        own.give_back(lease.slot, lease.key)


_held: dict[str, LeaseFile] = {}  # dead owners' files a reaper of this process holds locked


@contextlib.contextmanager
def file_of(owner: str) -> Iterator[LeaseFile | None]:
    """The lease file of ``owner`` on this host: this process's own, one a reaper here holds, or
    another mapped for the duration of the block (None when it has none here)."""
    own = own_book(owner)
    if own is not None:
        yield own.file
        return
    current = book()
    held = _held.get(owner)
    if held is not None:
        yield held
        return
    path = None if current is None else current.directory / f"{owner}{SUFFIX}"
    try:
        opened = None if path is None else LeaseFile.open(path, create=False)
    except (OSError, ValueError):
        opened = None
    try:
        yield opened
    finally:
        if opened is not None:
            opened.close()


@contextlib.contextmanager
def claim(path: Path) -> Iterator[LeaseFile | None]:
    """A dead owner's lease file, locked against other reapers for the block; None while its owner
    (or another reaper) holds it, or when it is not a lease file."""
    try:
        found = LeaseFile.open(path, create=False, lock=True)  # a live owner's file is not mapped
    except (OSError, ValueError):
        found = None
    if found is None:
        yield None
        return
    try:
        owner = path.name.removesuffix(SUFFIX)
        _held[owner] = found
        try:
            yield found
        finally:
            _held.pop(owner, None)
    finally:
        found.close()


def retire() -> None:
    """At a clean exit with nothing open: remove this process's lease file (else the reaper does)."""
    current = _books.get(os.getpid())
    if current is not None and current.in_use() == 0:
        with contextlib.suppress(OSError):
            current.path.unlink()


@receiver(setting_changed)
def _forget_books(*, setting: str, **kwargs: Any) -> None:
    # Tests point the database or the counters elsewhere at run time: the next lease uses the book
    # of that directory (a book stays open, and locked, for the life of the process).
    if setting in ("DATABASES", "DATA_DIR", "REDIS_URL", "GOVERNANCE_COUNTERS"):
        with _lock:
            _books.clear()
