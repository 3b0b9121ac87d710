"""The configuration generation: a committed change is in force on the next request of every process.

Each process caches configuration (``governance.metering.snapshot``) with the *token* of the
generation it was taken at. ``begin_request``, :func:`observe` and :func:`confirm` compare it with
the current generation; when they differ the caches are dropped (``_switch``) and
:class:`StaleConfig` makes the request start over (``MAX_RESTARTS`` times at most). :func:`changed`
runs after a commit: it bumps the ``ConfigGeneration`` row first, then the shared copy, so a reader
that sees the new generation reads the committed rows. Where the generation is read, decided once
per process (:func:`_source`):

- **local** (no ``REDIS_URL``; SQLite or ``GOVERNANCE_COUNTERS=local``): an 8-byte counter in a
  memory-mapped file beside the local counter table (``<database>.config`` on SQLite), read once
  per request in ``begin_request``;
- **redis** (``REDIS_URL`` set, whatever ``GOVERNANCE_COUNTERS`` says): the value under
  :data:`REDIS_KEY`. While the push lease holds (``freshness_push.trusted``) no read at all;
  otherwise read in the admit's round trip (:func:`observe`) or by one GET in :func:`confirm`,
  before the upstream call or a refusal. A missing value (Redis flushed or restarted) counts as a
  change, so a lost update can never leave a revoked key working; Redis unreachable: the row;
- **database** (PostgreSQL without Redis): the ``ConfigGeneration`` row, one primary-key read.

Accepted imprecision: a process killed between its commit and the bump leaves the others on their
caches until the next change or ``GOVERNANCE_CONFIG_CACHE_SECONDS`` (the snapshot TTL, a backstop).
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.dispatch import receiver

from governance.metering import freshness_push

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("bifrost.freshness")

REDIS_KEY = "bf:gov:config"
_COUNTER = struct.Struct("<q")
MAX_RESTARTS = 3  # a request restarted this often in a row is answered 503
UNREAD = object()  # a backend's admit that did not read the generation


class StaleConfig(Exception):
    """The configuration this request used changed meanwhile: start the request over."""


_lock = threading.Lock()
_token: Any = None  # the generation the process caches were taken at
_request = threading.local()  # expected: the token at request start; confirmed: checked this request
_mode: list[str] = []  # "local", "redis", "database" or "none", decided once per configuration
_file: dict[str, Any] = {}  # path, pid, mmap of the shared counter; the Redis client for writes


def _source() -> str:
    if _mode:
        return _mode[0]
    from governance.metering.counters import local_counters, local_table_path

    if settings.REDIS_URL:  # whether or not the counters live there (GOVERNANCE_COUNTERS=local/database)
        mode = "redis"
    elif local_counters() is not None or connections[DEFAULT_DB_ALIAS].vendor == "sqlite":
        mode = "local" if local_table_path() is not None else "none"
    else:
        mode = "database"
    with _lock:
        if not _mode:
            _mode.append(mode)
    return _mode[0]


@receiver(setting_changed)
def _forget_mode(*, setting: str, **kwargs: Any) -> None:
    # Tests (and nothing else) switch REDIS_URL, the counters or the database at run time.
    global _last_read
    if setting in ("REDIS_URL", "GOVERNANCE_COUNTERS", "DATABASES"):
        freshness_push.stop()
        with _lock:
            _mode.clear()
            _file.clear()
            _last_read = (float("-inf"), None)


# --- the shared counter file (embedded mode) ----------------------------------------------------


def _file_path() -> str | None:
    from governance.metering.counters import local_table_path

    table = local_table_path()
    if table is None:
        return None
    return str(Path(table).with_suffix(".config")) if table.endswith(".counters") else table + ".config"


def _mapped() -> mmap.mmap | None:
    """This process's mapping of the shared counter (re-opened after a fork)."""
    held = _file.get("map")
    if held is not None and _file.get("pid") == os.getpid():
        return held
    path = _file_path()
    if path is None:
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_size < _COUNTER.size:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < _COUNTER.size:
                    os.ftruncate(fd, _COUNTER.size)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        mapped = mmap.mmap(fd, _COUNTER.size)
    finally:
        os.close(fd)
    with _lock:
        _file.update(map=mapped, pid=os.getpid(), path=path)
    return mapped


def _bump_file() -> None:
    mapped = _mapped()
    if mapped is None:
        return
    fd = os.open(_file["path"], os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _COUNTER.pack_into(mapped, 0, _COUNTER.unpack_from(mapped, 0)[0] + 1)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# --- the database row ---------------------------------------------------------------------------


def _database_value() -> int:
    from governance.models import ConfigGeneration

    value = ConfigGeneration.objects.filter(pk=1).values_list("value", flat=True).first()
    return 0 if value is None else value


def _bump_database() -> None:
    from django.db.models import F

    from governance.models import ConfigGeneration

    if not ConfigGeneration.objects.filter(pk=1).update(value=F("value") + 1):
        ConfigGeneration.objects.get_or_create(pk=1, defaults={"value": 1})


# --- Redis ----------------------------------------------------------------------------------------


def _redis_client() -> redis.Redis:
    """The counters' Redis client when the counters live in Redis, else one of this module's."""
    from governance.metering.counters import redis_counters

    backend = redis_counters()
    if backend is not None:
        return backend.client
    client = _file.get("redis")
    if client is None:
        client = _file["redis"] = _redis_client_for(freshness_push.redis_url())
    return client


_connections = threading.local()


def _get_generation() -> str | None:
    """GET of the generation on this thread's own connection, the command packed once: redis-py's
    client and pool cost about 75 µs of CPU a call here, this about 35, and every request without
    limits on its path makes this call in production mode."""
    import redis

    conn = getattr(_connections, "conn", None)
    owner = (os.getpid(), settings.REDIS_URL)  # not one inherited over fork, nor of an old URL
    if conn is None or _connections.owner != owner:
        conn = _redis_client_for(freshness_push.redis_url()).connection_pool.make_connection()
        _connections.conn, _connections.owner = conn, owner
        _connections.packed = conn.pack_command("GET", REDIS_KEY)
    for attempt in range(2):
        try:
            conn.send_packed_command(_connections.packed, check_health=False)
            return conn.read_response()
        except redis.ConnectionError:
            conn.disconnect()  # an idle connection Redis dropped (restart): reconnect once
            if attempt:
                raise
        except BaseException:
            conn.disconnect()  # a half-read answer must not be read by the next call
            raise
    return None


def _redis_client_for(url: str) -> redis.Redis:
    import redis

    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=0.5, decode_responses=True)


def _redis_value() -> Any:
    """The Redis token, repaired when Redis lost it; None when Redis cannot be reached (or is
    marked down by the counters: then the database row tells, without waiting on a timeout)."""
    from governance.metering.counters import redis_counters

    backend = redis_counters()
    try:
        value = backend._call(_get_generation) if backend is not None else _get_generation()
    except Exception as exc:  # noqa: BLE001 - any Redis failure means "use the database"
        logger.debug("config generation not read from redis", extra={"error": type(exc).__name__})
        return None
    return ("redis", value if value is not None else _repair_redis())


def _repair_redis() -> str:
    """Redis lost the value (restart, flush): put a new one in place. Every process sees a value
    it has never seen, so every cache is dropped once."""
    fresh = freshness_push.fresh_value()
    try:
        # redis-py types the reply as bool | bytes | str; with decode_responses and get=True it is str or None.
        previous: str | None = _redis_client().set(REDIS_KEY, fresh, nx=True, get=True)  # type: ignore[assignment]
    except Exception:  # noqa: BLE001
        return fresh
    return previous if previous is not None else fresh


def _bump_redis() -> None:
    try:
        client = _redis_client()
    except Exception as exc:  # noqa: BLE001 - readers fall back to the database while Redis is away
        logger.warning("config generation not written to redis", extra={"error": type(exc).__name__})
    else:
        freshness_push.announce(client)


# --- the request side -----------------------------------------------------------------------------


def _current() -> Any:
    """The current generation where this deployment keeps it (one read)."""
    mode = _source()
    if mode == "local":
        try:
            mapped = _mapped()
        except OSError as exc:  # the file cannot be used: the database row still tells
            logger.warning("config generation file unusable", extra={"error": type(exc).__name__})
        else:
            if mapped is not None:
                return ("local", _COUNTER.unpack_from(mapped, 0)[0])
    if mode == "redis":
        token = _redis_value()
        if token is not None:
            return token
    if mode == "none":
        return None
    try:
        return ("database", _database_value())
    except DatabaseError:
        return _token  # the database is away too: the request fails on its own if it needs it


def _switch(token: Any) -> None:
    global _token
    from governance.metering import snapshot

    with _lock:
        if _token == token:
            return
    # Caches first, token after: a request that sees the new token can no longer find an entry
    # cached before the change (one that began earlier still expects the old token and restarts).
    snapshot.invalidate_local()
    with _lock:
        _token = token


def begin_request() -> None:
    """Called first by every inference request. Embedded and database modes check here (one
    read); in Redis mode the check rides on the admit, or :func:`confirm` makes it."""
    mode = _source()
    if mode == "redis":
        _request.expected, _request.confirmed, _request.started = _token, False, time.monotonic()
        return
    token = _current() if mode != "none" else _token
    if token != _token:
        _switch(token)
    _request.expected, _request.confirmed = token, True


def observe(value: Any) -> None:
    """The Redis value read in the same round trip as the admit: raise :class:`StaleConfig` when
    it is not the one this request's configuration was taken at."""
    if value is UNREAD or getattr(_request, "confirmed", True):
        return
    _check(("redis", value if value is not None else _repair_redis()))


def confirm() -> None:
    """Make sure this request's configuration is current before acting on it (an upstream call
    or a refusal); one read unless the admit already checked. Raises :class:`StaleConfig`."""
    if getattr(_request, "confirmed", True):
        return
    if freshness_push.trusted():  # every change reached this process before its writer answered
        _check(_token)
        return
    sent_at, token = _last_read
    if sent_at < _request.started:
        # No read of this process was sent since this request began: make one. A read sent after
        # that moment saw every change committed before it, so concurrent requests may share one.
        sent_at = time.monotonic()
        token = _current()
        _remember(sent_at, token)
    _check(token)


_last_read: tuple[float, Any] = (float("-inf"), None)  # (monotonic time a read was sent, its token)


def _remember(sent_at: float, token: Any) -> None:
    global _last_read
    with _lock:
        if sent_at > _last_read[0]:
            _last_read = (sent_at, token)


def _check(token: Any) -> None:
    if token != getattr(_request, "expected", None):
        _switch(token)
        _request.expected, _request.confirmed = token, False
        raise StaleConfig
    _request.confirmed = True


def changed() -> None:
    """A configuration change committed: move the generation everywhere a reader may look."""
    mode = _source()
    try:
        _bump_database()
    except DatabaseError as exc:
        logger.warning("config generation not written to the database", extra={"error": type(exc).__name__})
    if mode == "local":
        try:
            _bump_file()
        except OSError as exc:
            logger.warning("config generation file not written", extra={"error": type(exc).__name__})
    elif mode == "redis":
        _bump_redis()
