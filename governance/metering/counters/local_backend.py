"""Host-local hot counters: the Redis backend's rules, run in Python over a shared file.

The embedded mode's counters (``GOVERNANCE_COUNTERS=local``, and ``auto`` on SQLite without
``REDIS_URL``), shared by every worker and thread of every gateway process on the host that uses
the same database (``governance.metering.counters.local_store``), so a request limit of N admits
exactly N requests across all of them. Check-and-reserve is one short critical section with no
database access.

The three operations below are line-for-line ports of the Lua scripts in
``governance.metering.counters.lua`` (same arguments, same replies, same window, rebuild, watermark
and epoch rules), so everything ``RedisCounters`` builds on them (rebuild from the database when a
counter is missing, settle after a rebuild, live reads, resets, epochs) holds unchanged. Python
integers are exact, so there is no double-precision ceiling here. The one difference is where
the lease lives (``governance.metering.counters.leases``): in the owner's lease file, written and
cleared inside the same critical section as the counters, and a dead owner is known for certain
(its file lock is free), so no tombstone is needed.

When the table cannot serve a call (full, or its file unusable), the backend is marked down for
``RETRY_SECONDS`` and admission falls back to the database counters (still exact); on recovery
the epoch is bumped so every hot counter is rebuilt from the database, as after a Redis outage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from governance.metering import freshness
from governance.metering.counters import leases
from governance.metering.counters.base import Counter
from governance.metering.counters.local_store import Record, SharedTable, StoreError, Table, key_digest
from governance.metering.counters.redis_backend import LEASE_PREFIX, RedisCounters, counter_key

_digests: dict[str, bytes] = {}


def _digest(key: str) -> bytes:
    found = _digests.get(key)
    if found is None:
        if len(_digests) > 100_000:
            _digests.clear()
        found = _digests[key] = key_digest(key)
    return found


def _window(anchor: int, now: int, length: int, calendar_start: int, calendar_end: int) -> tuple[int, int]:
    if calendar_start > 0:
        return calendar_start, calendar_end
    start = anchor
    if now >= anchor + length:
        start = anchor + (now - anchor) // length * length
    return start, start + length


def _admit(table: Table, keys: list[str], args: list[Any]) -> list[Any]:
    now, keep = int(args[0]), int(args[1])
    epoch = table.epoch
    names = [_digest(k) for k in keys[3:]]
    state: list[Record] = []
    missing = []
    for i, name in enumerate(names):
        found = table.get(name, now)
        if found is None or found.epoch != epoch:
            missing.append(i + 1)
        else:
            state.append(found)
    if missing:
        return ["missing", missing]
    plan, rejected = [], []
    for i, h in enumerate(state):
        b = 6 + i * 6
        kind, limit, reserve = args[b], int(args[b + 1]), int(args[b + 2])
        usage, anchor = h.usage, h.anchor
        start, reset = _window(anchor, now, int(args[b + 3]), int(args[b + 4]), int(args[b + 5]))
        if anchor < start:
            usage, anchor = 0, start
        bad = usage >= limit or (kind != "t" and usage + reserve > limit)
        if bad:
            rejected.append([i + 1, usage, reset])
        plan.append((usage + reserve, anchor, reset))
    if rejected:
        return ["reject", rejected]
    out = []
    for name, h, (usage, anchor, reset) in zip(names, state, plan, strict=True):
        h.usage, h.anchor, h.expiry = usage, anchor, now + max(reset - now, 0) + keep
        table.put(name, h, now)
        out.append([h.generation, anchor, usage])
    slot = int(args[5])
    if args[2] and slot >= 0:
        # The lease, in this process's own lease file, before the table lock is let go.
        own = leases.book()
        if own is not None and LEASE_PREFIX + own.owner == keys[1]:
            marks = ";".join(f"{generation},{anchor}" for generation, anchor, _ in out)
            own.file.write(slot, str(args[2]), f"{args[3]}\n{marks}".encode(), leases.ADMITTED)
    return ["ok", out]


def _settle(table: Table, keys: list[str], args: list[Any]) -> int:
    now, keep, record = int(args[0]), int(args[1]), int(args[2])
    rid, mode, slot = str(args[3]), args[4], int(args[5])
    if rid and slot >= 0 and mode != "db":
        # The lease is the slot in its owner's file. Gone means the reaper settled the request (the
        # owner is certainly dead then: the file lock says so), so neither mode may act again.
        owner = keys[1].removeprefix(LEASE_PREFIX)
        own = leases.own_book(owner)
        if own is not None:  # the usual case: this process settles its own admission
            held = own.file.holds(slot, rid)
            if held:
                own.file.clear(slot)
        else:
            with leases.file_of(owner) as lease_file:
                held = lease_file is not None and lease_file.holds(slot, rid)
                if held and lease_file is not None:
                    lease_file.clear(slot)
        if not held:
            return 0
    epoch = table.epoch
    for i, key in enumerate(keys[3:]):
        name = _digest(key)
        h = table.get(name, now)
        if h is None:
            continue
        b = 6 + i * 7
        # A database admission passes "" as its generation: it matches no stored generation.
        generation = args[b]
        rebuilt = mode == "db" or h.generation != generation
        seen = rebuilt and (record == 0 or record <= h.watermark)
        if h.epoch != epoch or seen:
            continue
        usage, anchor = h.usage, h.anchor
        start, reset = _window(anchor, now, int(args[b + 4]), int(args[b + 5]), int(args[b + 6]))
        same = not rebuilt and anchor == int(args[b + 1]) and anchor >= start
        if anchor < start:
            usage, anchor = 0, start
        if same:
            usage -= int(args[b + 2])
        h.usage, h.anchor = max(usage + int(args[b + 3]), 0), anchor
        h.expiry = now + max(reset - now, 0) + keep
        table.put(name, h, now)
    return 1


def _init(table: Table, keys: list[str], args: list[Any]) -> int:
    now, keep = int(args[0]), int(args[1])
    epoch = table.epoch
    for i, key in enumerate(keys[1:]):
        name = _digest(key)
        b = 2 + i * 5
        h = table.get(name, now)
        if h is None or h.epoch != epoch:
            # Generations come as 16 hex digits; 15 of them fit a signed 64-bit slot.
            generation = int(str(args[b + 2])[:15], 16)
            expiry = now + int(args[b + 3]) + keep
            table.put(name, Record(int(args[b]), int(args[b + 1]), generation, epoch, int(args[b + 4]), expiry), now)
    return 1


class _Script:
    """Callable like a registered Lua script: ``script(keys=..., args=...)``."""

    def __init__(self, table: SharedTable, operation: Callable[[Table, list[str], list[Any]], Any]) -> None:
        self.table, self.operation = table, operation

    def __call__(self, *, keys: list[str], args: list[Any]) -> Any:
        with self.table.locked() as table:
            return self.operation(table, keys, args)


class LocalCounters(RedisCounters):
    """Hot counters shared by the processes of one host (see module doc)."""

    name = "local"
    errors = (StoreError,)

    def __init__(self, path: str | None) -> None:
        # Not RedisCounters.__init__: it would build a Redis client. The scripts are local calls.
        self.table = SharedTable(path)
        self._admit = _Script(self.table, _admit)
        self._init = _Script(self.table, _init)
        self._lock = threading.Lock()
        self._down_until = None

    def _admit_and_config(self, keys: list[str], args: list[Any]) -> tuple[Any, Any]:
        # The configuration generation is not here: ``freshness.confirm`` reads it where it lives.
        return freshness.UNREAD, self._admit(keys=keys, args=args)

    def _fetch(self, counters: list[Counter]) -> list[Any]:
        now = int(time.time() * 1000)
        with self.table.locked() as table:
            out: list[Any] = [table.epoch]
            for counter in counters:
                h = table.get(_digest(counter_key(counter)), now)
                out.append((None, None, None) if h is None else (h.usage, h.anchor, h.epoch))
        return out

    def _settle_each(self, calls: list[tuple[list[str], list[Any]]]) -> None:
        # One critical section for the batch: each settle is still applied whole, in order.
        with self.table.locked() as table:
            for keys, args in calls:
                _settle(table, keys, args)

    def _delete(self, keys: list[str]) -> None:
        with self.table.locked() as table:
            for key in keys:
                table.delete(_digest(key))

    # Local leases live in the owners' lease files, which the reaper finds on its own: no registry.
    def heartbeat(self, owner: str, until_ms: int) -> None:
        pass

    def expired_owners(self, now_ms: int, limit: int = 100) -> list[str]:
        return []

    def leases_of(self, owner: str) -> dict[str, str]:
        return {}

    def drop_owner(self, owner: str) -> None:
        pass

    def _incr_epoch(self) -> int:
        with self.table.locked() as table:
            table.set_epoch(table.epoch + 1)
            return table.epoch
