"""Budget and rate-limit counters: one interface, two backends, and the rule for choosing.

``GOVERNANCE_COUNTERS`` (see settings):

- ``database`` — counters live in the Budget/RateLimit rows (``DatabaseCounters``). The embedded
  default (no ``REDIS_URL``).
- ``auto`` with ``REDIS_URL`` — Redis holds the hot counters (``RedisCounters``). **When Redis is
  unreachable, enforcement falls back to the database counters** (slower, still exact: the rows
  are kept up to date by the ledger on every settle). When Redis answers again, the first process
  that fell back bumps the Redis epoch so every hot counter is rebuilt from the database.
- ``redis`` — Redis only: **when Redis is unreachable, requests are refused with 503**
  ``governance_unavailable`` (fail closed) instead of falling back, for operators who prefer
  refusing to the small cross-host imprecision of a partial outage (see
  ``governance.enforcement``).

If the database is unreachable too (or in ``database`` mode), the answer is 503; enforcement
never lets a request through unchecked and never answers 500.

Both backends expose ``admit(request_id=, counters=, estimated_cost=, estimated_tokens=, now=)``
returning an ``Admission`` or a list of ``Violation``; settling goes through
``governance.ledger`` (database rows) and, for Redis admissions, ``RedisCounters.settle``.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from governance.counters.base import (
    Admission,
    Counter,
    CountersUnavailable,
    Rejection,
    Violation,
    build_counters,
    rejection_for,
)
from governance.counters.database import DatabaseCounters
from governance.counters.redis_backend import RedisCounters

__all__ = [
    "Admission",
    "Counter",
    "CountersUnavailable",
    "DatabaseCounters",
    "RedisCounters",
    "Rejection",
    "Violation",
    "build_counters",
    "database_counters",
    "fallback_allowed",
    "primary_counters",
    "redis_counters",
    "rejection_for",
]

_lock = threading.Lock()
_database = DatabaseCounters()
_redis: dict[str, RedisCounters] = {}


def database_counters() -> DatabaseCounters:
    return _database


def redis_counters() -> RedisCounters | None:
    """The Redis backend for ``settings.REDIS_URL`` (one client and pool per process), or None."""
    url = settings.REDIS_URL
    if not url or settings.GOVERNANCE_COUNTERS == "database":
        return None
    backend = _redis.get(url)
    if backend is None:
        with _lock:
            backend = _redis.setdefault(url, RedisCounters(url))
    return backend


def primary_counters() -> RedisCounters | DatabaseCounters:
    return redis_counters() or _database


def fallback_allowed() -> bool:
    """Whether an unreachable Redis falls back to the database (``auto``) or fails closed (``redis``)."""
    return settings.GOVERNANCE_COUNTERS == "auto"


@receiver(setting_changed)
def _forget_backends(*, setting: str, **kwargs) -> None:
    # Tests (and nothing else) change REDIS_URL at run time; drop clients built for the old one.
    if setting in ("REDIS_URL", "GOVERNANCE_COUNTERS"):
        with _lock:
            _redis.clear()
