"""Redis mode: the configuration generation pushed to every process, delivery acknowledged.

Each gateway process keeps one listener thread (:class:`Listener`) that

1. subscribes to :func:`channel`, then reads the generation (``freshness.REDIS_KEY``) and adopts it
   (``freshness._switch``: the process caches are dropped when it moved);
2. records in Redis that it holds that value, under a lease of :data:`LEASE_SECONDS` (a key per
   process, listed in :data:`PROCESSES`), renewed every third of a lease, and at once on a change.

While its lease holds and its subscription has nothing unread, :func:`trusted` vouches for the
process's generation: a clock read and a zero-timeout poll, no round trip. A change
(``freshness.changed`` -> :func:`announce`) moves the value and publishes it in one script, then
waits until every process with a live lease has recorded the new value, or its lease ran out. A
process counts its lease from before it asked for it, so a lease that ran out in Redis ran out in
the process first, and that process then reads the generation on every request.

Lost messages: a Redis restart or a dropped subscription leaves the socket readable (EOF), which
:func:`trusted` sees before the listener does; the listener then deletes its lease, reconnects,
subscribes and reads the value again. A writer whose bump may have run without being confirmed
(a reply lost) waits out the longest lease instead.

Accepted imprecision: a writer waits up to one lease for a process killed without exiting (its
lease outlives it); a host cut off from Redis *while* Redis restarts may serve from its cache until
its lease ends (at most :data:`LEASE_SECONDS`); a writer that cannot reach Redis at all moves only
the database row, so processes that still trust Redis keep their caches until the snapshot TTL
(``GOVERNANCE_CONFIG_CACHE_SECONDS``). Redis must allow this deployment's user ``SUBSCRIBE`` and
``PUBLISH`` on :func:`channel` (Redis 7 ACL users start with no channel access).
"""

from __future__ import annotations

import atexit
import logging
import os
import select
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("bifrost.freshness")

LEASE_SECONDS = 2.0
MARGIN_SECONDS = 0.2  # a process stops trusting this long before Redis lets its lease expire
PROCESSES = "bf:gov:processes"  # the ids of processes that may hold a lease, scored by renewal time
PRUNE_AFTER_MS = 3_600_000  # an id not renewed for an hour is dropped from PROCESSES (its lease is long gone)
GRACE_SECONDS = 0.1  # how long a writer waits for subscribers that hold no lease
LEASE_PREFIX = "bf:gov:process:"  # + id: the generation value that process holds

# Move the generation and publish it, in one step: "<epoch>:<n>" -> "<epoch>:<n+1>". The epoch is
# new whenever the value was lost (Redis restarted or flushed), so no process can mistake a new
# value for one it has seen.
BUMP = """
local value = redis.call('GET', KEYS[1])
local epoch, n = ARGV[1], 0
if value then
  local sep = string.find(value, ':', 1, true)
  if sep then
    epoch = string.sub(value, 1, sep - 1)
    n = tonumber(string.sub(value, sep + 1)) or 0
  end
end
local new = epoch .. ':' .. (n + 1)
redis.call('SET', KEYS[1], new)
return {new, redis.call('PUBLISH', ARGV[2], new)}
"""


def redis_url() -> str:
    """``REDIS_URL``: set whenever the generation lives in Redis, the only time it is asked for."""
    url = settings.REDIS_URL
    if not url:
        raise RuntimeError("the configuration generation is in Redis only when REDIS_URL is set")
    return url


def fresh_value() -> str:
    """A generation value no process has seen: the first one of a new epoch."""
    return f"{uuid.uuid4().hex}:0"


def covers(held: str | None, wanted: str) -> bool:
    """Whether a process holding ``held`` has seen the change that produced ``wanted``."""
    if held is None:
        return False
    held_epoch, _, held_n = held.partition(":")
    wanted_epoch, _, wanted_n = wanted.partition(":")
    return held_epoch == wanted_epoch and held_n.isdigit() and wanted_n.isdigit() and int(held_n) >= int(wanted_n)


def channel(client: redis.Redis) -> str:
    """Pub/sub channels span a server's databases: the channel names the database."""
    return f"bf:gov:config:{client.connection_pool.connection_kwargs.get('db', 0)}"


# --- the writer side ------------------------------------------------------------------------------


def announce(client: redis.Redis) -> None:
    """Move the generation, publish it, and wait until every live process holds it."""
    from governance.metering import freshness

    started = time.monotonic()
    try:
        value, receivers = client.eval(BUMP, 1, freshness.REDIS_KEY, uuid.uuid4().hex, channel(client))
        behind = _wait_for(client, value, int(receivers))
    except Exception as exc:  # noqa: BLE001 - readers fall back to the database while Redis is away
        if "connecting to" in str(exc):  # never reached Redis: nothing was moved there
            logger.warning("config generation not written to redis", extra={"error": type(exc).__name__})
            return
        # The bump may have run (a reply lost, a poll cut off): no process can trust a value read
        # before it once the longest lease has run out since, so wait that long.
        logger.warning(
            "config change not confirmed by redis; waiting out the leases", extra={"error": type(exc).__name__}
        )
        time.sleep(max(0.0, started + LEASE_SECONDS + MARGIN_SECONDS - time.monotonic()))
        return
    if behind:
        logger.warning(
            "processes did not confirm a configuration change before their lease ended",
            extra={"processes": behind, "lease_seconds": LEASE_SECONDS},
        )


def _wait_for(client: redis.Redis, value: str, receivers: int) -> int:
    """Poll the leases until each live one holds ``value``; returns how many were still behind
    when the longest lease could have run out.

    ``receivers`` (what PUBLISH counted) may include subscribers without a lease yet (a process
    registering) and ones that never take a lease (a ``redis-cli SUBSCRIBE``, a host gone without a
    reset): they are given :data:`GRACE_SECONDS` to show up, not a whole lease. A subscriber that
    received the change cannot trust an older value meanwhile: requests see its unread message
    (:func:`trusted`), and the listener stops trusting before it reads one."""
    now = time.monotonic()
    deadline, grace = now + LEASE_SECONDS + MARGIN_SECONDS, now + GRACE_SECONDS
    pause = 0.0005
    while True:
        # redis-py types replies as bytes or str whatever the client; this one decodes them (str).
        ids: list[str] = client.zrange(PROCESSES, 0, -1)  # type: ignore[assignment]
        held: list[str | None] = client.mget([LEASE_PREFIX + ident for ident in ids]) if ids else []  # type: ignore[assignment]
        holding = sum(1 for seen in held if covers(seen, value))
        behind = sum(1 for seen in held if seen is not None) - holding
        now = time.monotonic()
        if not behind and (holding >= receivers or now >= grace):
            return 0
        if now >= deadline:
            return behind
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


# --- the process side -----------------------------------------------------------------------------


class Listener(threading.Thread):
    """This process's subscription and lease (see the module doc)."""

    def __init__(self, url: str) -> None:
        super().__init__(name="bifrost-config-listener", daemon=True)
        self.url = url
        self.pid = os.getpid()
        self.lease_id = f"{socket.gethostname()}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.trusted_until = 0.0  # monotonic; 0 while the subscription is not known to be live
        # (the subscription's socket, a serial that moves with every new socket): read as one value,
        # so a request never pairs one socket's descriptor with another's serial.
        self.socket_ref: tuple[int, int] = (-1, 0)
        self.stopping = threading.Event()
        self._client: Any = None

    def run(self) -> None:
        from governance.metering import freshness

        self._client = freshness._redis_client_for(self.url)
        pause = 0.05
        while not self.stopping.is_set():
            try:
                self._listen()
                pause = 0.05
            except Exception as exc:  # noqa: BLE001 - any failure: distrust, reconnect
                if not self.stopping.is_set():
                    logger.warning(
                        "config listener disconnected; checking freshness on every request",
                        extra={"error": type(exc).__name__},
                    )
                self.stopping.wait(pause)
                pause = min(pause * 2, 2.0)

    def _listen(self) -> None:
        conn = self._client.connection_pool.make_connection()
        try:
            conn.connect()
            conn.send_command("SUBSCRIBE", channel(self._client))
            conn.read_response(push_request=True)  # subscribed: no change goes unnoticed from here
            self.socket_ref = (conn._sock.fileno(), self.socket_ref[1] + 1)
            while not self.stopping.is_set():
                asked = time.monotonic()
                self._record()
                self.trusted_until = asked + LEASE_SECONDS - MARGIN_SECONDS
                renew_at = asked + LEASE_SECONDS / 3
                while not self.stopping.is_set() and (left := renew_at - time.monotonic()) > 0:
                    if conn.can_read(timeout=min(left, 0.25)):
                        # A change (or EOF: ConnectionError). Distrust first: once read, the
                        # message no longer shows to requests until ``_record`` switches.
                        self.trusted_until = 0.0
                        conn.read_response(push_request=True)
                        break
        finally:
            self.trusted_until, self.socket_ref = 0.0, (-1, self.socket_ref[1] + 1)
            conn.disconnect()
            self._release()

    def _record(self) -> None:
        from governance.metering import freshness

        value = self._client.get(freshness.REDIS_KEY)
        if value is None:
            value = freshness._repair_redis()
        freshness._switch(("redis", value))
        pipe = self._client.pipeline(transaction=False)
        pipe.set(LEASE_PREFIX + self.lease_id, value, px=int(LEASE_SECONDS * 1000))
        now_ms = time.time() * 1000
        pipe.zadd(PROCESSES, {self.lease_id: now_ms})
        pipe.zremrangebyscore(PROCESSES, 0, now_ms - PRUNE_AFTER_MS)  # processes killed long ago
        pipe.execute()

    def _release(self) -> None:
        """Give the lease back, so writers do not wait for it (best effort)."""
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.delete(LEASE_PREFIX + self.lease_id)
            pipe.zrem(PROCESSES, self.lease_id)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the lease then runs out on its own
            logger.debug("config lease not given back", extra={"error": type(exc).__name__})

    def stop(self) -> None:
        self.trusted_until = 0.0
        self.stopping.set()


_lock = threading.Lock()
_listener: Listener | None = None
_pollers = threading.local()


def trusted() -> bool:
    """Whether this process's generation may be used without reading Redis (starts the listener
    when this process has none yet)."""
    listener = _listener
    if listener is None or listener.pid != os.getpid() or listener.url != settings.REDIS_URL:
        try:
            _start()
        except RuntimeError as exc:  # no thread to be had: read the generation per request
            logger.warning("config listener not started", extra={"error": str(exc)})
        return False
    if time.monotonic() >= listener.trusted_until:
        return False
    ref = listener.socket_ref
    if ref[0] < 0:
        return False
    if getattr(_pollers, "ref", None) != (listener, ref):
        poller = select.poll()
        try:
            poller.register(ref[0], select.POLLIN)
        except (ValueError, OSError):  # the socket went meanwhile
            return False
        _pollers.poller, _pollers.ref = poller, (listener, ref)
    # Anything unread on the subscription (a change, or EOF after a restart) is not known yet.
    return not _pollers.poller.poll(0) and time.monotonic() < listener.trusted_until and listener.socket_ref == ref


def _start() -> None:
    global _listener
    with _lock:
        current = _listener
        if current is not None and current.pid == os.getpid() and current.url == settings.REDIS_URL:
            return
        if current is not None and current.pid == os.getpid():
            current.stop()
        _listener = Listener(redis_url())
        _listener.start()


def stop() -> None:
    """Stop this process's listener and give its lease back (settings changed, or exit)."""
    global _listener
    with _lock:
        current, _listener = _listener, None
    if current is not None and current.pid == os.getpid():
        current.stop()
        if current.is_alive():
            current.join(timeout=1.0)


atexit.register(stop)
