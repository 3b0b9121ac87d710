"""Budget and rate-limit counters: one interface, three backends, and the rule for choosing.

``GOVERNANCE_COUNTERS`` (see settings):

- ``auto`` (default): the hot counters live in **Redis** when ``REDIS_URL`` is set
  (``RedisCounters``: shared by every worker and host); otherwise, on SQLite, in the **local**
  table shared by the processes of this host (``LocalCounters``: the embedded mode); otherwise
  (PostgreSQL without Redis, possibly several hosts) in the **database** rows.
- ``redis``: Redis only; **when Redis is unreachable, requests are refused with 503**
  ``governance_unavailable`` (fail closed) instead of falling back, for operators who prefer
  refusing to the small cross-host imprecision of a partial outage.
- ``local``: the local table, whatever the database; only correct when every gateway process
  sharing the database runs on this host (the table is a file beside SQLite, or, for PostgreSQL,
  ``BIFROST_DATA_DIR/counters.table``).
- ``database``: counters live in the Budget/RateLimit rows (``DatabaseCounters``): one short
  row-locked transaction per check.

**Fallback** (every mode but ``redis``): when the hot counters cannot be used (Redis unreachable,
local table full or unusable), admission uses the database counters (slower, still exact: the
ledger keeps the rows up to date on every settle). A process that fell back bumps the epoch on its
first successful contact, so every hot counter is rebuilt from the database. If the database is
unreachable too, the answer is 503: never open, never 500.

Every backend exposes ``admit(request_id=, counters=, estimated_cost=, estimated_tokens=, now=,
lease=)`` returning an ``Admission`` or a list of ``Violation``, and files the reservation's lease
(``counters.leases``) in the same atomic step as the reservation.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, connections
from django.dispatch import receiver

from governance.metering.counters.base import (
    HOT_BACKENDS,
    Admission,
    Counter,
    CountersUnavailable,
    Rejection,
    Violation,
    build_counters,
    rejection_for,
)
from governance.metering.counters.database import DatabaseCounters
from governance.metering.counters.local_backend import LocalCounters
from governance.metering.counters.redis_backend import RedisCounters
from governance.metering.sqlite_lock import sqlite_file

__all__ = [
    "Admission",
    "Counter",
    "CountersUnavailable",
    "DatabaseCounters",
    "HOT_BACKENDS",
    "LocalCounters",
    "RedisCounters",
    "Rejection",
    "Violation",
    "build_counters",
    "database_counters",
    "fallback_allowed",
    "hot_counters",
    "primary_counters",
    "redis_counters",
    "rejection_for",
]

_lock = threading.Lock()
_database = DatabaseCounters()
_redis: dict[str, RedisCounters] = {}
_local: list[LocalCounters | None] = []  # the decision, once made


def database_counters() -> DatabaseCounters:
    return _database


def redis_counters() -> RedisCounters | None:
    """The Redis backend for ``settings.REDIS_URL`` (one client and pool per process), or None."""
    url = settings.REDIS_URL
    if not url or settings.GOVERNANCE_COUNTERS not in ("auto", "redis"):
        return None
    backend = _redis.get(url)
    if backend is None:
        with _lock:
            backend = _redis.setdefault(url, RedisCounters(url))
    return backend


def local_table_path() -> str | None:
    """Where the local table lives: beside the SQLite database (so every process using that
    database shares it), else in ``BIFROST_DATA_DIR``; None for an in-memory database."""
    if connections[DEFAULT_DB_ALIAS].vendor != "sqlite":
        return str(Path(settings.DATA_DIR) / "counters.table")
    name = sqlite_file()
    return None if name is None else name + ".counters"


def local_counters() -> LocalCounters | None:
    """The host-local backend, when the rule in the module doc selects it (decided once per
    configuration: this runs on every governed request)."""
    if _local:
        return _local[0]
    mode = settings.GOVERNANCE_COUNTERS
    backend = None
    if mode == "local" or (
        mode == "auto" and not settings.REDIS_URL and connections[DEFAULT_DB_ALIAS].vendor == "sqlite"
    ):
        backend = LocalCounters(local_table_path())
    with _lock:
        if not _local:
            _local.append(backend)
    return _local[0]


def hot_counters() -> RedisCounters | None:
    """The hot backend in use (Redis or the local table), or None when counters live in the rows."""
    return redis_counters() or local_counters()


def primary_counters() -> RedisCounters | DatabaseCounters:
    return hot_counters() or _database


def fallback_allowed() -> bool:
    """Whether unusable hot counters fall back to the database (all modes but ``redis``)."""
    return settings.GOVERNANCE_COUNTERS != "redis"


@receiver(setting_changed)
def _forget_backends(*, setting: str, **kwargs: Any) -> None:
    # Tests (and nothing else) change REDIS_URL at run time; drop clients built for the old one.
    if setting in ("REDIS_URL", "GOVERNANCE_COUNTERS", "DATABASES"):
        with _lock:
            _redis.clear()
            _local.clear()
