"""The lease reaper: settles the reservations of gateway processes that died holding them.

One thread per gateway worker (``start``, from gunicorn's ``post_worker_init``; the leases are
described in ``governance.metering.counters.leases``). Every ``TICK_SECONDS`` it

1. claims the lease files of this host's dead owners (a non-blocking ``flock`` succeeds: the kernel
   dropped the owner's lock) and settles all their reservations: the ones in the file (local
   table), in the owner's Redis lease hash and in its ``CounterLease`` rows. The file's marks say
   whether each request had started its upstream call. It leaves the files alone while this host
   has ledger journals not yet replayed (``journal.pending``): their settles charge what the
   requests really used, and remove the leases;
2. every third of ``GOVERNANCE_LEASE_SECONDS``: renews its own registration (Redis) and the expiry
   of its own database leases (:func:`heartbeat`), and reaps owners of other hosts whose
   registration or leases have expired (marks out of reach: ``upstream_reached`` unknown).

A reaped reservation gets a UsageRecord with status ``ledger.REAPED_STATUS`` (0): charged its
reservation (worst-case cost and tokens, one request) if the upstream had been reached or that is
unknown, else released. Settling goes through ``enforcement.settle_many`` (``reaped``), so windows,
rebuilds and "exactly once" follow the ledger's rules.

Accepted imprecision: a live process on another host that cannot renew its registration for
``GOVERNANCE_LEASE_SECONDS`` has its open reservations settled at their worst case (its own late
settles then change nothing, so each request still counts once). Redis leases lost with Redis's
data are not reaped: their reservations went with them, and such a request has no UsageRecord.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from governance.metering import enforcement
from governance.metering.counters import CountersUnavailable, hot_counters
from governance.metering.counters import leases as lease_store
from governance.metering.counters.base import Admission
from governance.metering.counters.database import renew_leases
from governance.metering.counters.leases import ADMITTED, CALLED, Lease, Payload
from governance.metering.ledger import REAPED_STATUS, LedgerEntry
from governance.models import CounterLease
from governance.models.usage import INT_COLUMN_MAX

logger = logging.getLogger("bifrost.leases")

TICK_SECONDS = 1.0
BATCH = 200

_lock = threading.Lock()
_thread: threading.Thread | None = None
_stop = threading.Event()


def start() -> None:
    """Start this process's lease thread (once per process; gunicorn's ``post_worker_init``)."""
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _stop.clear()
        lease_store.book()  # the lease file exists (and is locked) before any request
        _thread = threading.Thread(target=_loop, name="bifrost-leases", daemon=True)
        _thread.start()


def stop() -> None:
    """At exit, after the settles were drained: stop the thread, drop this process's lease file."""
    _stop.set()
    lease_store.retire()


def _loop() -> None:
    last_renewal, outage = -1e9, False
    while not _stop.is_set():
        try:
            renew = time.monotonic() - last_renewal >= settings.GOVERNANCE_LEASE_SECONDS / 3
            if renew:
                heartbeat()
                last_renewal = time.monotonic()
            run_once(remote=renew)
        except (OperationalError, InterfaceError) as exc:
            # The database is away: every tick would fail the same way. One line per outage.
            if not outage:
                logger.warning("lease reaper waiting for the database", extra={"error": type(exc).__name__})
            outage = True
            connection.close()
        except Exception:  # noqa: BLE001 - the thread must outlive any one failure; retried next tick
            logger.exception("lease reaper pass failed")
            connection.close()
        else:
            outage = False
        _stop.wait(TICK_SECONDS)


def heartbeat() -> None:
    """This process is alive: renew its Redis registration and its database leases' expiry."""
    own = lease_store.book()
    if own is None:
        return
    until_ms = int((time.time() + settings.GOVERNANCE_LEASE_SECONDS) * 1000)
    hot = hot_counters()
    if hot is not None:
        try:
            hot.heartbeat(own.owner, until_ms)
        except CountersUnavailable:
            pass  # registered again by the next admit or heartbeat once Redis answers
    renew_leases(own.owner, until_ms)


def run_once(*, remote: bool = True, now: datetime | None = None) -> int:
    """One pass (see module doc); returns how many reservations it settled."""
    own = lease_store.book()
    if own is None:
        return 0
    settled = 0
    # Usage journaled while the database was away (``governance.metering.journal``) is replayed first: it holds
    # what this host's dead processes really used, where reaping would charge the worst case.
    from governance.metering import journal

    journaled = journal.pending()
    for path in sorted(own.directory.glob(f"*{lease_store.SUFFIX}")):
        if path == own.path or journaled:
            continue
        with lease_store.claim(path) as dead:
            if dead is None:
                continue  # its owner is alive (or another reaper is at it)
            owner = path.name.removesuffix(lease_store.SUFFIX)
            count, complete = reap_owner(owner, dead, now=now)
            settled += count
            if complete and not any(payload for _, _, _, payload in dead.entries()):
                path.unlink(missing_ok=True)
    if remote:
        for owner in _expired_owners():
            if owner != own.owner and not (own.directory / f"{owner}{lease_store.SUFFIX}").exists():
                settled += reap_owner(owner, None, now=now)[0]
    return settled


def _expired_owners() -> list[str]:
    """Owners whose registration (Redis) or database leases have expired."""
    owners: list[str] = []
    hot = hot_counters()
    if hot is not None:
        try:
            owners += hot.expired_owners(int(time.time() * 1000))
        except CountersUnavailable:
            pass
    expired = CounterLease.objects.filter(expires_at__lt=timezone.now()).values_list("owner", flat=True)
    owners += [owner for owner in expired.distinct()[:100] if owner not in owners]
    return owners


def reap_owner(
    owner: str, lease_file: lease_store.LeaseFile | None, *, now: datetime | None = None
) -> tuple[int, bool]:
    """Settle every reservation ``owner`` holds; ``(settled, complete)``, complete unless a store
    could not be read (then the rest is tried again on a later pass). ``lease_file`` is the owner's
    file (locked by the caller), or None for an owner of another host."""
    now = now or timezone.now()
    marks: dict[str, int] = {}
    settlements: list[enforcement.Settlement] = []
    hot = hot_counters()
    if lease_file is not None:
        for slot, state, rid, text in lease_file.entries():
            marks[rid] = state
            if text is None:
                continue
            if hot is None or hot.name != "local":
                logger.warning(
                    "lease of the local table left alone: the local table is not in use", extra={"request_id": rid}
                )
                continue
            payload, suffix = lease_store.decode(text)
            marks_ = lease_store.hot_marks(suffix, integer_generation=True)
            settlements.append(_settlement("local", rid, payload, marks_, Lease(owner, rid, slot), state, now))
    complete = True
    if hot is not None and hot.name == "redis":
        try:
            found = hot.leases_of(owner)
        except CountersUnavailable:
            found, complete = {}, False
        for rid, text in found.items():
            payload, suffix = lease_store.decode(text)
            marks_ = lease_store.hot_marks(suffix, integer_generation=False)
            settlements.append(_settlement("redis", rid, payload, marks_, Lease(owner, rid), marks.get(rid), now))
    for lease_id, uid, text in CounterLease.objects.filter(owner=owner).values_list("id", "request_id", "payload"):
        payload, suffix = lease_store.decode(text)
        db_marks = lease_store.database_marks(suffix)
        rid = str(uid)
        lease = Lease(owner, rid, -1, lease_id)
        settlements.append(_settlement("database", rid, payload, db_marks, lease, marks.get(rid), now))
    for start in range(0, len(settlements), BATCH):
        enforcement.settle_many(settlements[start : start + BATCH], now=now)
    if settlements:
        reached = sum(1 for item in settlements if item.upstream_called)
        logger.warning(
            "settled the reservations of a dead process",
            extra={"owner": owner, "reservations": len(settlements), "upstream_reached": reached},
        )
    if complete and hot is not None and hot.name == "redis":
        try:
            hot.drop_owner(owner)
        except CountersUnavailable:
            complete = False
    return len(settlements), complete


def _settlement(
    backend: str, rid: str, payload: Payload, marks: tuple, lease: Lease, state: int | None, now: datetime
) -> enforcement.Settlement:
    """The settle of a reservation whose owner died: at its reservation if the upstream had been
    (or may have been) reached, released if the owner's mark says it had not."""
    reaped = "reached" if state == CALLED else ("not_reached" if state == ADMITTED else "unknown")
    reached = reaped != "not_reached"
    admission = Admission(
        request_id=rid,
        backend=backend,
        counters=payload.counters,
        marks=marks,
        estimated_cost=payload.estimated_cost,
        estimated_tokens=payload.estimated_tokens,
        admitted_at=payload.admitted_at,
        lease=lease,
    )
    fields = payload.entry
    entry = LedgerEntry(
        provider=str(fields.get("provider", "")),
        model=str(fields.get("model", "")),
        status_code=REAPED_STATUS,
        virtual_key_id=fields.get("virtual_key_id"),
        team_id=fields.get("team_id"),
        customer_id=fields.get("customer_id"),
        provider_key_id=fields.get("provider_key_id"),
        request_type=str(fields.get("request_type", "chat_completion")),
        # A lease found weeks late must still fit the column, or its record could never be written.
        latency_ms=min(max(0, int((now - payload.admitted_at) / timedelta(milliseconds=1))), INT_COLUMN_MAX),
        streamed=bool(fields.get("streamed", False)),
        priced=bool(fields.get("priced", True)),
        price_source=fields.get("price_source"),
        created_at=now,
    )
    cost = payload.estimated_cost if reached else Decimal("0")
    tokens = payload.estimated_tokens if reached else 0
    return enforcement.Settlement(admission, cost, tokens, reached, entry, reaped=reaped)
