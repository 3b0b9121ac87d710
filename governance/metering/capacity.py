"""Live capacity figures for routing rules: how much of a level's budgets and rate limits is used.

``team.budget_used_percent > 90.0`` in a routing rule (``governance.routing_rules``) reads this on
the request's path, before admission, so it must cost no database query there. For one level of a
virtual key's hierarchy (the key itself, its team, its customer) :func:`level_use` gives, in
percent of the limit: the highest of its budgets' use, its request rate limit's use and its token
rate limit's use (0.0 for what the level does not have). Usage is that of the current window,
reservations of requests in flight included, like ``governance.metering.live`` shows it.

Where the figures come from, by counter backend (``governance.metering.counters``):

- **local table** (embedded mode): read live on every request, a few struct reads under the
  table's file lock, no query;
- **Redis** (production mode): one pipelined read for the counters a process has not read in the
  last :data:`CACHE_SECONDS`; within that second a process reuses what it read, so a figure can
  be up to 1 s stale (an accepted imprecision: it steers routing, it does not enforce anything);
- **database rows** (``GOVERNANCE_COUNTERS=database``, PostgreSQL without Redis, a counter the
  hot copy does not hold yet, or a hot backend that is down): one query per kind of row, its
  figures likewise reused for up to :data:`CACHE_SECONDS`.

The counters of a level are built once per distinct configuration (``functools.lru_cache`` on the
immutable specs, with their local-table digests), and the hot reads use the table's records or
Redis's raw fetch (``RedisCounters._fetch``) with integer window arithmetic: about 5 us for a
level in embedded mode. The figures never take part in admission, which still checks every limit
exactly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache

from django.db import DatabaseError

from governance.durations import calendar_window_start, duration_seconds
from governance.limitspec import BudgetSpec, RateLimitSpec
from governance.metering.counters import CountersUnavailable, LocalCounters, RedisCounters, hot_counters
from governance.metering.counters.base import BUDGET, REQUESTS, TOKENS, Counter, build_counters, limit_units
from governance.metering.counters.local_store import StoreError, key_digest
from governance.metering.counters.redis_backend import counter_key
from governance.metering.counters.rows import counter_state, lock_rows, row_key
from governance.metering.snapshot import VirtualKeySnapshot

logger = logging.getLogger("bifrost.routing")

CACHE_SECONDS = 1.0  # how long a process reuses a figure it did not read from the local table
CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class LevelUse:
    """One level's use of its limits, in percent (0.0 where it has none)."""

    budget_used_percent: float = 0.0
    rate_limit_used_percent: float = 0.0
    token_rate_limit_used_percent: float = 0.0


NO_USE = LevelUse()


@dataclass(frozen=True, slots=True)
class _Gauge:
    """A counter and what turning its raw hot state into a fraction needs, computed once."""

    counter: Counter
    key: tuple[str, str, str]  # (kind, spec id, duration): the cache key
    digest: bytes  # its name in the local table
    limit: int  # in the hot copy's units (nano-dollars for budgets)
    length_ms: int


@lru_cache(maxsize=4096)
def _gauges(budgets: tuple[BudgetSpec, ...], rate_limit: RateLimitSpec | None) -> tuple[_Gauge, ...]:
    counters = build_counters(
        budgets, [rate_limit] if rate_limit is not None else [], estimated_cost=Decimal("0"), estimated_tokens=0
    )
    return tuple(
        _Gauge(
            counter=c,
            key=(c.kind, c.spec_id, c.duration),
            digest=key_digest(counter_key(c)),
            limit=limit_units(c.limit) if c.kind == BUDGET else int(c.limit),
            length_ms=duration_seconds(c.duration) * 1000,
        )
        for c in counters
    )


def _level_gauges(vk: VirtualKeySnapshot, level: str) -> tuple[_Gauge, ...]:
    if level == "virtual_key":
        return _gauges(vk.budgets, vk.rate_limit)
    if level == "team":
        return _gauges(vk.team_budgets, vk.team_rate_limit)
    return _gauges(vk.customer_budgets, vk.customer_rate_limit)


def level_use(vk: VirtualKeySnapshot | None, levels: Iterable[str]) -> dict[str, LevelUse]:
    """``{level: LevelUse}`` for the wanted levels (``virtual_key``, ``team``, ``customer``) of
    ``vk``'s hierarchy, all read at once."""
    if vk is None:
        return dict.fromkeys(levels, NO_USE)
    gauges = [(level, _level_gauges(vk, level)) for level in levels]
    every = [g for _, level_gauges in gauges for g in level_gauges]
    fractions = _fractions(every) if every else {}
    out: dict[str, LevelUse] = {}
    for level, level_gauges in gauges:
        if not level_gauges:
            out[level] = NO_USE
            continue
        top = {BUDGET: 0.0, REQUESTS: 0.0, TOKENS: 0.0}
        for gauge in level_gauges:
            fraction = fractions.get(gauge.key, 0.0) * 100.0
            if fraction > top[gauge.counter.kind]:
                top[gauge.counter.kind] = fraction
        out[level] = LevelUse(top[BUDGET], top[REQUESTS], top[TOKENS])
    return out


# --- reading -----------------------------------------------------------------------------------

# (kind, spec id, duration) -> (monotonic time it may be reused until, fraction used)
_cache: dict[tuple[str, str, str], tuple[float, float]] = {}


def forget() -> None:
    """Drop the figures this process holds (tests; a process reuses them at most 1 s anyway)."""
    _cache.clear()


def _remember(key: tuple[str, str, str], fraction: float, now: float) -> None:
    if len(_cache) >= CACHE_LIMIT:
        _cache.clear()
    _cache[key] = (now + CACHE_SECONDS, fraction)


def _fractions(gauges: list[_Gauge]) -> dict[tuple[str, str, str], float]:
    """The used fraction of each gauge's counter: hot copy first, database rows for the rest."""
    out: dict[tuple[str, str, str], float] = {}
    backend = hot_counters()
    missing = gauges
    if isinstance(backend, LocalCounters):
        missing = _read_local(backend, gauges, out)
    else:
        now = time.monotonic()
        missing = []
        for gauge in gauges:
            held = _cache.get(gauge.key)
            if held is not None and held[0] > now:
                out[gauge.key] = held[1]
            else:
                missing.append(gauge)
        if missing and backend is not None:
            missing = _read_redis(backend, missing, out)
    if missing:
        _read_rows(missing, out)
    return out


def _read_local(backend: LocalCounters, gauges: list[_Gauge], out: dict) -> list[_Gauge]:
    """The local table's records, read under its lock (a few struct reads); what it does not hold
    is returned. A table marked down (``_down_until``) is left to admission to recover."""
    if backend._down_until is not None:
        return gauges
    now_ms = time.time_ns() // 1_000_000
    try:
        with backend.table.locked() as table:
            epoch = table.epoch
            records = [table.get(gauge.digest, now_ms) for gauge in gauges]
    except StoreError:
        return gauges
    missing: list[_Gauge] = []
    for gauge, record in zip(gauges, records, strict=True):
        if record is None or record.epoch != epoch:
            missing.append(gauge)
        else:
            out[gauge.key] = _fraction(gauge, record.usage, record.anchor, now_ms)
    return missing


def _read_redis(backend: RedisCounters, gauges: list[_Gauge], out: dict) -> list[_Gauge]:
    """One pipelined read of ``gauges`` (the backend's raw fetch: the epoch, then ``(usage,
    anchor ms, built epoch)`` per counter, through its availability guard ``_call``); the figures
    are kept for ``CACHE_SECONDS``; what Redis does not hold is returned."""
    counters = [g.counter for g in gauges]
    try:
        epoch, *states = backend._call(lambda: backend._fetch(counters))
    except CountersUnavailable:
        return gauges
    now_ms = time.time_ns() // 1_000_000
    now = time.monotonic()
    missing: list[_Gauge] = []
    for gauge, state in zip(gauges, states, strict=True):
        usage, anchor, built = state if state is not None else (None, None, None)
        if usage is None or anchor is None or built is None or int(built) != int(epoch):
            missing.append(gauge)
            continue
        fraction = _fraction(gauge, int(usage), int(anchor), now_ms)
        out[gauge.key] = fraction
        _remember(gauge.key, fraction, now)
    return missing


def _fraction(gauge: _Gauge, usage: int, anchor_ms: int, now_ms: int) -> float:
    """``usage / limit`` in the window containing now: a copy whose window has ended reads 0."""
    if gauge.counter.calendar_aligned:
        start = calendar_window_start(gauge.counter.duration, datetime.now(UTC))
        current = anchor_ms >= int(start.timestamp() * 1000)
    else:
        current = now_ms < anchor_ms + gauge.length_ms
    if not current or gauge.limit <= 0:
        return 0.0
    return max(usage, 0) / gauge.limit


def _read_rows(gauges: list[_Gauge], out: dict) -> None:
    """The database rows' figures (one query per kind of row), reused for up to ``CACHE_SECONDS``."""
    counters = [g.counter for g in gauges]
    try:
        rows = lock_rows(counters, lock=False)
    except DatabaseError as exc:
        logger.warning("capacity figures unavailable: the database did not answer", extra={"error": type(exc).__name__})
        return
    now_dt = datetime.now(UTC)
    now = time.monotonic()
    for gauge in gauges:
        row = rows.get(row_key(gauge.counter))
        fraction = 0.0
        if row is not None and gauge.counter.limit:
            usage, _start, _end = counter_state(gauge.counter, row, now_dt)
            fraction = max(float(usage), 0.0) / float(gauge.counter.limit)
        out[gauge.key] = fraction
        _remember(gauge.key, fraction, now)
