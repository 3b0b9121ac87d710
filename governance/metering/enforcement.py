"""``admit``, ``settle``, ``settle_many`` and ``release``: the budget and rate-limit calls the proxy makes.

``admit`` builds the request's counters (``counters.base.build_counters``), checks **every** budget
and rate limit on the path and reserves on all of them in one atomic step in the primary backend,
trying the database counters next when the hot ones raise ``CountersUnavailable`` (unless
``GOVERNANCE_COUNTERS=redis``; the rule is in ``governance.metering.counters``). It answers an
``Admission`` or a ``Rejection``: when no backend can check, 503 ``governance_unavailable``, never
an open door. The reservation is leased to this process in the same step (``counters.leases``);
``entry`` is what the UsageRecord says if the lease reaper has to settle it.

``settle_many`` replaces reservations by actual amounts: one ledger transaction for the whole batch
(``ledger.record_many``), then the hot copy, then each lease slot is freed. Rules:

- **Request limits**: the slot is taken at admission; a request counts one request only if the
  upstream was called (``upstream_called=True``), whether it succeeded or failed. With
  ``upstream_called=False`` (``release``) cost and tokens are forced to 0 and the slot is given back.
- **Exactly once**: only an ``open`` or ``retrying`` admission settles; a request that already has
  its UsageRecord (a commit whose acknowledgement was lost, or the reaper's) is not charged again.
- **Database unreachable**: nothing of the batch touches the hot copy, the admissions are marked
  ``retrying`` and the error is raised; the caller passes the same settlements again later, and
  until then their reservations stay counted (errs towards refusing, never overshooting).
- **Hot copy unreachable at settle**: logged only; the rows have the usage and the hot copy is
  rebuilt from them.

Accepted imprecisions (hot counters short by in-flight reservations after a rebuild; dead
workers charged their worst case): see ARCHITECTURE.md, "Accepted imprecisions".
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from governance.limitspec import BudgetSpec, RateLimitSpec
from governance.metering import ledger
from governance.metering.counters import (
    HOT_BACKENDS,
    CountersUnavailable,
    database_counters,
    fallback_allowed,
    hot_counters,
    leases,
    primary_counters,
)
from governance.metering.counters.base import (
    BUDGET,
    TOKENS,
    UNAVAILABLE,
    Admission,
    Rejection,
    build_counters,
    rejection_for,
)
from governance.metering.ledger import LedgerEntry
from telemetry import metrics

logger = logging.getLogger("bifrost.enforcement")

__all__ = [
    "Admission",
    "LedgerEntry",
    "Rejection",
    "admit",
    "release",
    "settle",
]


def admit(
    *,
    request_id: str | uuid.UUID,
    budgets: Iterable[BudgetSpec],
    rate_limits: Iterable[RateLimitSpec],
    estimated_cost: Decimal,
    estimated_tokens: int,
    now: datetime | None = None,
    entry: LedgerEntry | None = None,
) -> Admission | Rejection:
    """Check every budget and rate limit on the path and reserve on all of them, atomically.

    ``budgets`` and ``rate_limits`` are given in path order (provider config -> VK -> team ->
    customer -> provider -> model). ``estimated_cost`` is the worst-case cost in USD (reserved on every budget);
    ``estimated_tokens`` is reserved on token limits; one request slot is taken on request
    limits. Returns an ``Admission`` to settle or release later, or a ``Rejection`` (402
    ``budget_exceeded``, 429 ``token_limited``/``request_limited``/``rate_limited`` with
    ``Retry-After``, 503 ``governance_unavailable``). ``request_id`` (a UUID) becomes the
    UsageRecord's ``request_id``.

    The reservation is leased to this process in the same atomic step
    (``governance.metering.counters.leases``); ``entry`` (its provider, model, key, team, customer...)
    is what the UsageRecord says if the lease reaper has to settle it.
    """
    now = now or timezone.now()
    request_id = uuid.UUID(str(request_id))
    estimated_cost = Decimal(estimated_cost)
    counters = build_counters(
        tuple(budgets), tuple(rate_limits), estimated_cost=estimated_cost, estimated_tokens=estimated_tokens
    )
    if not counters:
        return Admission(str(request_id), "none", (), (), estimated_cost, estimated_tokens, now)
    primary = primary_counters()
    backends = [primary]
    if primary is not database_counters() and fallback_allowed():
        backends.append(database_counters())
    lease = leases.prepare(
        str(request_id), counters, estimated_cost, estimated_tokens, now, entry, settings.GOVERNANCE_LEASE_SECONDS
    )
    unavailable = ""  # the backend that could not be reached before this one (a fallback)
    try:
        for backend in backends:
            try:
                result = backend.admit(
                    request_id=request_id,
                    counters=counters,
                    estimated_cost=estimated_cost,
                    estimated_tokens=estimated_tokens,
                    now=now,
                    lease=lease,
                )
            except CountersUnavailable as exc:
                logger.warning("counters unavailable", extra={"backend": backend.name, "error": str(exc)})
                metrics.counter_unavailable(backend.name)
                unavailable = unavailable or backend.name
                continue
            metrics.counter_backend(backend.name, fallback_from=unavailable)
            if isinstance(result, Admission):
                lease = None  # the admission holds it now
                return result
            return rejection_for(result, now)
        return UNAVAILABLE
    finally:
        leases.cancel(lease)  # refused, unavailable, or an exception (e.g. stale configuration)


@dataclass(frozen=True, slots=True)
class Settlement:
    """The arguments of one ``settle``, for ``settle_many``."""

    admission: Admission
    actual_cost: Decimal
    actual_tokens: int
    upstream_called: bool
    entry: LedgerEntry | None = None
    # Set by the lease reaper (``governance.metering.reaper``): "reached", "not_reached" or "unknown".
    reaped: str = ""


def settle(
    admission: Admission,
    *,
    actual_cost: Decimal,
    actual_tokens: int,
    upstream_called: bool,
    entry: LedgerEntry | None = None,
    now: datetime | None = None,
) -> bool:
    """Settle a request: charge the actual cost and tokens, release the rest, write the ledger.

    ``entry`` describes the request for its UsageRecord; it is required when the upstream was
    called (a charge without a ledger row would break "database totals = sum of records").
    Idempotent: a second settle of the same admission does nothing, and a UsageRecord that
    already exists for ``request_id`` is not charged twice. Returns whether this call charged.
    """
    return settle_many([Settlement(admission, actual_cost, actual_tokens, upstream_called, entry)], now=now)[0]


def settle_many(settlements: list[Settlement], *, now: datetime | None = None) -> list[bool]:
    """Settle a batch: one database transaction for all ledger rows and counter rows, then the
    hot copy of each. The writer's settler thread batches what finished in the last few ms.

    If the database cannot be reached (``OperationalError`` or ``InterfaceError`` after
    ``governance.metering.ledger``'s retries), the hot copy is left alone, the admissions are marked
    ``retrying`` and the error is raised: the same settlements are to be passed again later, and
    until then their reservations stay counted. The transaction may have committed even so (the
    connection broke before its acknowledgement); the next attempt finds the UsageRecords and
    settles only the hot copy, so each request is charged exactly once either way. A request the
    lease reaper settled meanwhile (its worker presumed dead) is not charged again either.

    Settlements marked ``reaped`` come from the lease reaper: their hot copies count only if the
    reaper removes the lease (``lua.SETTLE`` mode ``reap``). Each settled admission's lease slot
    in this process is freed."""
    now = now or timezone.now()
    charges, results, open_ = [], [False] * len(settlements), []
    for index, item in enumerate(settlements):
        admission = item.admission
        if admission.state not in ("open", "retrying"):
            continue
        retried = admission.state == "retrying"
        actual_cost, actual_tokens = item.actual_cost, item.actual_tokens
        if not item.upstream_called:
            actual_cost, actual_tokens = Decimal("0"), 0
        actual_cost, actual_tokens = max(Decimal(actual_cost), Decimal("0")), max(int(actual_tokens), 0)
        if item.entry is None and (item.upstream_called or actual_cost or actual_tokens):
            raise ValueError("settle() needs a LedgerEntry for a request that reached the upstream")
        admission.state = "settled" if item.upstream_called or item.entry is not None else "released"
        actuals: list[Decimal | int] = []
        for counter in admission.counters:
            if counter.kind == BUDGET:
                actuals.append(actual_cost)
            elif counter.kind == TOKENS:
                actuals.append(actual_tokens)
            else:
                actuals.append(1 if item.upstream_called else 0)
        open_.append((index, admission, actuals, bool(item.reaped)))
        if item.entry is not None or admission.backend == "database":
            reached = None if item.reaped == "unknown" else item.upstream_called
            charge = ledger.Charge(
                item.entry,
                admission,
                actual_cost,
                actual_tokens,
                actuals,
                retried=retried,
                upstream_reached=reached,
                reaping=bool(item.reaped),
            )
            charges.append((index, charge))
    outcome: dict[int, ledger.Recorded] = {}
    database_down = False
    try:
        if charges:
            recorded = ledger.record_many([charge for _, charge in charges], now=now)
            outcome = {index: result for (index, _), result in zip(charges, recorded, strict=True)}
    except (OperationalError, InterfaceError):
        # The database could not be reached. The requests keep their reservations, which errs
        # towards refusing, until the caller settles them again once the database answers;
        # settling the hot copy now could charge usage the ledger never got.
        database_down = True
        for _, admission, _, _ in open_:
            admission.state = "retrying"
        raise
    finally:
        # Database admissions settle onto the hot copy too when Redis is the primary: one made
        # after another process's recovery rebuild would otherwise never reach Redis.
        hot: dict[bool, list] = {False: [], True: []}
        for index, admission, actuals, reaping in [] if database_down else open_:
            result = outcome.get(index) or ledger.Recorded(True, None, actuals)
            results[index] = result.charged
            # ``hot`` is None when another party settled this request, hot copy included (or
            # will: the reaper after a settle whose hot part never ran).
            if result.hot is not None and admission.backend in (*HOT_BACKENDS, "database"):
                hot[reaping].append((admission, result.hot, result.record_id))
        _settle_hot(hot[False], now)
        _settle_hot(hot[True], now, reaping=True)
        for _, admission, _, _ in [] if database_down else open_:
            leases.finished(admission.lease)
    return results


def release(admission: Admission, *, now: datetime | None = None) -> None:
    """Give back everything reserved by a request that never reached the upstream."""
    settle(admission, actual_cost=Decimal("0"), actual_tokens=0, upstream_called=False, now=now)


def _settle_hot(
    items: list[tuple[Admission, list[Decimal | int], int | None]], now: datetime, *, reaping: bool = False
) -> None:
    """The hot copy of a batch of settles (``(admission, actuals, record_id)``), in one call."""
    backend = hot_counters()
    if backend is None or not items:
        return
    try:
        backend.settle_many(items, now, reaping=reaping)
    except CountersUnavailable:
        # The ledger already has the usage; the hot copy is rebuilt from it (epoch bump on
        # reconnect), which also drops these requests' reservations. Their leases stay (the
        # Redis ones until the hot copy is reachable): a reaper finds the records and only
        # removes them, as the rebuilt counters already hold the records' amounts.
        logger.warning(
            "could not settle hot counters",
            extra={"request_ids": [str(admission.request_id) for admission, _, _ in items]},
        )
