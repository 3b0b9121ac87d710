"""Redis counters: the hot copy shared by every worker and host in production mode.

- **One round trip** each for check-and-reserve (``lua.ADMIT``) and settle (``lua.SETTLE``).
- **Money is exact**: integer nano-dollars in Redis (costs rounded up, limits down), ``Decimal``
  in Python and the database. Lua numbers are doubles, so budgets above about $9 million are
  clamped to that ceiling in Redis.
- **Backed by the database**: a counter missing from Redis (restart, eviction, TTL, manual reset)
  is rebuilt from its database row on first use, never started at zero. The ledger brings the
  rows up to date on every settle, so the rebuild sees all settled usage; a settle racing with a
  rebuild is counted exactly once (watermark, see ``_rebuild``). The rows also hold the
  reservations of *database* admissions still in flight (made while Redis was unreachable): the
  rebuild subtracts them (their leases say which), or such a request would count twice once it
  settles its actual amount on top.
- **Accepted imprecision**: reservations of hot admissions in flight at the instant of a rebuild
  are not in the copy; those requests settle their actual amount onto the rebuilt counter, and
  until then the counter is short by their estimates (bounded by what was in flight).
- **Leases** (``governance.metering.counters.leases``): the admit script files the reservation under its
  request id in the owner's lease hash and the settle script removes it, in the same round trips;
  ``heartbeat``, ``expired_owners``, ``leases_of`` and ``drop_owner`` serve the lease reaper.
- **Epoch**: a process that could not reach Redis (and used the database meanwhile) increments
  ``bf:gov:epoch`` on its first successful contact. Every counter built under an older epoch is
  then rebuilt from the database, so usage recorded during the outage is not missed by counters
  that survived in Redis.
- **Down detection**: a connection error or timeout marks Redis down for this process for
  ``RETRY_SECONDS``; meanwhile calls fail fast with ``CountersUnavailable`` and the caller
  applies the fallback rule (``governance.metering.counters``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import redis
from django.db import DatabaseError, transaction
from django.db.models import Max

from governance.durations import calendar_window_end, calendar_window_start, duration_seconds
from governance.metering import freshness
from governance.metering.counters import leases, lua
from governance.metering.counters.base import (
    BUDGET,
    TOKENS,
    Admission,
    Counter,
    CountersUnavailable,
    Violation,
    dollars_to_units,
    limit_units,
    units_to_dollars,
)
from governance.metering.counters.database import database_reservations
from governance.metering.counters.redis_calls import RedisCalls
from governance.metering.counters.rows import FIELDS, counter_state, lock_rows, row_key
from governance.models import UsageRecord

logger = logging.getLogger("bifrost.counters")

KEY_PREFIX = "bf:gov:"
EPOCH_KEY = KEY_PREFIX + "epoch"
OWNERS_KEY = KEY_PREFIX + "owners"  # sorted set: owner lease hash -> registration expiry (ms)
LEASE_PREFIX = KEY_PREFIX + "lease:"
TOMBSTONE_PREFIX = KEY_PREFIX + "reaped:"
CONNECT_TIMEOUT = 0.5
SOCKET_TIMEOUT = 1.0
RETRY_SECONDS = 1.0
KEEP_MS = 86_400_000  # keep a counter a day past its window end, then let Redis drop it
_KIND_CODE = {BUDGET: "b", TOKENS: "t", "requests": "r"}


def counter_key(counter: Counter) -> str:
    # Duration and alignment are part of the key: changing either starts a counter rebuilt from
    # the database instead of reusing windows computed under the old rule.
    return (
        f"{KEY_PREFIX}{_KIND_CODE[counter.kind]}:{counter.spec_id}:{counter.duration}:{int(counter.calendar_aligned)}"
    )


_fixed: dict[tuple, tuple[str, str, int, int]] = {}


def fixed_parts(counter: Counter) -> tuple[str, str, int, int]:
    """``(key, kind code, limit in units, window length ms)``: the parts of a counter's script
    arguments that do not depend on the request, worked out once per configured limit (every
    governed request needs them, for the few limits there are)."""
    ident = (counter.kind, counter.spec_id, counter.duration, counter.calendar_aligned, counter.limit)
    found = _fixed.get(ident)
    if found is None:
        if len(_fixed) > 65536:
            _fixed.clear()
        limit = limit_units(counter.limit) if counter.kind == BUDGET else int(counter.limit)
        length = duration_seconds(counter.duration) * 1000
        found = _fixed[ident] = (counter_key(counter), _KIND_CODE[counter.kind], limit, length)
    return found


def lease_key(owner: str) -> str:
    return LEASE_PREFIX + owner


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int | str) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def units(counter: Counter, amount: Decimal | int) -> int:
    return dollars_to_units(amount) if counter.kind == BUDGET else int(amount)


def from_units(counter: Counter, value: int | str) -> Decimal | int:
    return units_to_dollars(int(value)) if counter.kind == BUDGET else int(value)


def window_args(counter: Counter, length: int, now: datetime) -> list[int]:
    """Window length ms (``length``, from ``fixed_parts``), calendar start ms, calendar end ms (0, 0
    when not calendar-aligned)."""
    if not counter.calendar_aligned:
        return [length, 0, 0]
    start = calendar_window_start(counter.duration, now)
    return [length, to_ms(start), to_ms(calendar_window_end(counter.duration, start))]


class Script(Protocol):
    """A registered Lua script (or the local backend's stand-in): ``script(keys=..., args=...)``."""

    def __call__(self, *, keys: list[str], args: list[Any]) -> Any: ...


class RedisCounters:
    """Counters in Redis, rebuilt from the database when missing."""

    name = "redis"
    errors: tuple[type[Exception], ...] = (redis.RedisError,)

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT, decode_responses=True
        )
        self._admit_lua = self.client.register_script(lua.ADMIT)
        self._settle_lua = self.client.register_script(lua.SETTLE)
        self._init: Script = self.client.register_script(lua.INIT)
        self._drop_owner = self.client.register_script(lua.DROP_OWNER)
        self._calls = RedisCalls(self.client)  # the admit and settle calls, on every governed request
        self._lock = threading.Lock()
        self._down_until: float | None = None  # monotonic time before which we do not retry

    # --- availability ------------------------------------------------------------------------
    @property
    def is_down(self) -> bool:
        return self._down_until is not None

    def _call(self, operation: Callable[[], Any]) -> Any:
        down_until = self._down_until
        if down_until is not None and time.monotonic() < down_until:
            raise CountersUnavailable("redis marked down")
        try:
            if down_until is not None:
                with self._lock:
                    if self._down_until is not None:
                        # Usage was recorded in the database while we could not reach Redis:
                        # make every process rebuild its counters from the database.
                        self._incr_epoch()
                        self._down_until = None
                        logger.warning("%s counters usable again; they will be rebuilt from the database", self.name)
            return operation()
        except self.errors as exc:
            self.mark_down(exc)
            raise CountersUnavailable(f"{self.name} counters unavailable: {type(exc).__name__}") from exc

    def mark_down(self, exc: BaseException | None = None) -> None:
        with self._lock:
            if self._down_until is None:
                reason = type(exc).__name__ if exc else "?"
                logger.warning("%s counters unavailable (%s); applying the fallback rule", self.name, reason)
            self._down_until = time.monotonic() + RETRY_SECONDS

    # --- check-and-reserve ---------------------------------------------------------------------
    def admit(
        self,
        *,
        request_id: uuid.UUID,
        counters: list[Counter],
        estimated_cost: Decimal,
        estimated_tokens: int,
        now: datetime,
        lease: leases.PendingLease | None = None,
    ) -> Admission | list[Violation]:
        keys = [EPOCH_KEY, lease_key(lease.owner if lease else ""), OWNERS_KEY]
        args: list[Any] = [to_ms(now), KEEP_MS]
        if lease is None:
            args += ["", "", 0, -1]
        else:
            args += [lease.key, lease.payload, lease.until_ms, lease.slot]
        for counter in counters:
            key, code, limit, length = fixed_parts(counter)
            keys.append(key)
            args += [code, limit, units(counter, counter.reserve), *window_args(counter, length, now)]
        for _ in range(3):
            config, (tag, payload) = self._call(lambda: self._admit_and_config(keys, args))
            if tag == "missing":
                self._rebuild([counters[int(i) - 1] for i in payload], now)
                continue
            if tag == "reject":
                freshness.observe(config)  # a refusal on old limits is not given
                return [
                    Violation(counters[int(i) - 1], from_units(counters[int(i) - 1], usage), from_ms(reset))
                    for i, usage, reset in payload
                ]
            admission = Admission(
                request_id=str(request_id),
                backend=self.name,
                counters=tuple(counters),
                marks=tuple((generation, int(anchor)) for generation, anchor, _ in payload),
                estimated_cost=estimated_cost,
                estimated_tokens=estimated_tokens,
                admitted_at=now,
                lease=None if lease is None else lease.lease(),
            )
            try:
                freshness.observe(config)
            except freshness.StaleConfig:
                # Admitted on configuration that has changed: give everything back, start over.
                self.settle_many([(admission, [0 * c.reserve for c in counters], None)], now)
                raise
            return admission
        raise CountersUnavailable("redis counters kept disappearing while being rebuilt")

    def _admit_and_config(self, keys: list[str], args: list[Any]) -> tuple[str | None, Any]:
        """The admit script's reply and the configuration generation (``governance.metering.freshness``),
        which the script reads in the one round trip the admit makes anyway (``KEYS[4]``)."""
        tag, payload, config = self._calls.script(self._admit_lua, [*keys[:3], freshness.REDIS_KEY, *keys[3:]], args)
        return config, (tag, payload)

    def _rebuild(self, counters: list[Counter], now: datetime) -> None:
        """Load counters from their database rows (window-aware) into Redis.

        The rows stay locked until Redis has the copy, and the copy remembers the highest
        UsageRecord id its snapshot saw: a ledger write for these rows either committed before
        the snapshot (its record id is at most that watermark, so its settle must not add it
        again) or waits for the lock and settles onto the new copy (higher id: it is added).

        The copy leaves out the reservations of database admissions still in flight (their
        ``CounterLease`` rows, written and deleted with the reservations under the same row
        locks): like any reservation made outside this copy, each settles by adding its actual
        amount, judged by the record watermark. Copied, a reservation would stay in the copy
        for good next to that actual amount (or for ever, for a release that writes no record).
        """
        try:
            with transaction.atomic():
                rows = lock_rows(counters)
                watermark = UsageRecord.objects.aggregate(top=Max("id"))["top"] or 0
                in_flight = database_reservations(counters, rows, now)
                keys = [EPOCH_KEY]
                args: list[Any] = [to_ms(now), KEEP_MS]
                for counter in counters:
                    row = rows.get(row_key(counter))
                    if row is None:
                        usage, end, anchor = (Decimal("0") if counter.kind == BUDGET else 0), now, now
                    else:
                        usage, start, end = counter_state(counter, row, now)
                        anchor = max(getattr(row, FIELDS[counter.kind][1]), start)
                        usage = max(usage - in_flight.get(row_key(counter) + (counter.kind,), 0), 0 * usage)
                    keys.append(counter_key(counter))
                    args += [
                        units(counter, usage),
                        to_ms(anchor),
                        uuid.uuid4().hex[:16],
                        max(to_ms(end) - to_ms(now), 0),
                        watermark,
                    ]
                self._call(lambda: self._init(keys=keys, args=args))
        except DatabaseError as exc:
            raise CountersUnavailable(f"database unavailable for counter rebuild: {type(exc).__name__}") from exc

    # --- settle ----------------------------------------------------------------------------------
    def settle(
        self, admission: Admission, actuals: list[Decimal | int], now: datetime, *, record_id: int | None
    ) -> None:
        """Replace each reservation by the actual amount (0 releases it entirely)."""
        self.settle_many([(admission, actuals, record_id)], now)

    def settle_many(
        self,
        items: list[tuple[Admission, list[Decimal | int], int | None]],
        now: datetime,
        *,
        reaping: bool = False,
    ) -> None:
        """``settle`` for a batch of ``(admission, actuals, record_id)``: one round trip to Redis.

        ``reaping``: the lease reaper settles a dead owner's admissions; each counts only if the
        script removes its lease (see ``lua.SETTLE``)."""
        if items:
            calls = [
                self._settle_args(admission, actuals, now, record_id, reaping)
                for admission, actuals, record_id in items
            ]
            self._call(lambda: self._settle_each(calls))

    def _settle_args(
        self, admission: Admission, actuals: list[Decimal | int], now: datetime, record_id: int | None, reaping: bool
    ) -> tuple[list[str], list[Any]]:
        lease = admission.lease
        database = admission.backend != self.name
        mode = "db" if database else ("reap" if reaping else "hot")
        rid = "" if lease is None else lease.key
        keys = [EPOCH_KEY, lease_key("" if lease is None else lease.owner), TOMBSTONE_PREFIX + rid]
        args: list[Any] = [to_ms(now), KEEP_MS, record_id or 0, rid, mode, -1 if lease is None else lease.slot]
        for counter, mark, actual in zip(admission.counters, admission.marks, actuals, strict=True):
            if not database:
                (generation, anchor), reserved = mark, units(counter, counter.reserve)
            else:
                # A database admission (made while Redis was unreachable): its reservation is in no
                # hot copy (a rebuild leaves it out), so the script treats the counter as rebuilt
                # and lets the watermark decide whether the actual amount is already in it.
                generation, anchor, reserved = "", 0, 0
            key, _, _, length = fixed_parts(counter)
            keys.append(key)
            args += [generation, anchor, reserved, units(counter, actual), *window_args(counter, length, now)]
        return keys, args

    # --- reads and maintenance ---------------------------------------------------------------------
    def read(self, counters: list[Counter], now: datetime) -> list[tuple[Decimal | int, datetime, datetime] | None]:
        """Hot usage, window start and end per counter; None where Redis holds no current copy."""

        epoch, *hashes = self._call(lambda: self._fetch(counters))
        out: list[tuple[Decimal | int, datetime, datetime] | None] = []
        for counter, (usage, anchor, built_epoch) in zip(counters, hashes, strict=True):
            if usage is None or built_epoch != epoch:
                out.append(None)
                continue
            last = from_ms(anchor)
            start, end = counter.window(last, now)
            value = from_units(counter, usage) if last >= start else from_units(counter, 0)
            out.append((value, start, end))
        return out

    def forget(self, counters: list[Counter]) -> None:
        """Drop hot copies so the next use rebuilds them from the database."""
        if counters:
            self._call(lambda: self._delete([counter_key(c) for c in counters]))

    def bump_epoch(self) -> int:
        """Invalidate every hot counter at once (they are rebuilt from the database)."""
        return int(self._call(self._incr_epoch))

    # --- leases (``governance.metering.reaper``) ---------------------------------------------------------
    def heartbeat(self, owner: str, until_ms: int) -> None:
        """Register ``owner`` (its lease hash) as alive until ``until_ms`` (wall clock)."""
        self._call(lambda: self.client.zadd(OWNERS_KEY, {lease_key(owner): until_ms}))

    def expired_owners(self, now_ms: int, limit: int = 100) -> list[str]:
        """Owners whose registration has run out (dead, or cut off from Redis for that long)."""
        found = self._call(lambda: self.client.zrangebyscore(OWNERS_KEY, "-inf", now_ms, start=0, num=limit))
        return [key.removeprefix(LEASE_PREFIX) for key in found]

    def leases_of(self, owner: str) -> dict[str, str]:
        """``{request id: lease payload}`` of the reservations ``owner`` holds."""
        return self._call(lambda: self.client.hgetall(lease_key(owner)))

    def drop_owner(self, owner: str) -> None:
        """Forget ``owner``'s registration once it holds no lease."""
        self._call(lambda: self._drop_owner(keys=[OWNERS_KEY, lease_key(owner)]))

    # --- storage primitives (``local_backend`` provides the same over a shared file) ---------------
    def _fetch(self, counters: list[Counter]) -> list[Any]:
        """``[epoch, (usage, anchor, built epoch) per counter...]``, absent fields as None."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(EPOCH_KEY)
        for counter in counters:
            pipe.hmget(counter_key(counter), "u", "a", "e")
        epoch, *hashes = pipe.execute()
        return [epoch or "0", *hashes]

    def _settle_each(self, calls: list[tuple[list[str], list[Any]]]) -> None:
        # One pipeline: a batch of settles costs one round trip (and one reply parse) instead of
        # one per request. Each script still runs atomically on its own counters.
        self._calls.scripts(self._settle_lua, calls)

    def _delete(self, keys: list[str]) -> None:
        self.client.delete(*keys)

    def _incr_epoch(self) -> int:
        return int(self.client.incr(EPOCH_KEY))
