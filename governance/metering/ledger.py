"""The ledger write of governed requests: their UsageRecords and the database counters, in one transaction.

``record_many`` writes a batch of :class:`Charge` in one short transaction. It locks the counter
rows of the batch first (``counters.rows``: fixed lock order, exact ``Decimal``), so the record ids
are allocated while the rows are held (which orders them against a hot copy's rebuild), then for
each request

1. inserts its ``UsageRecord`` (``usage_rows``), idempotent on ``request_id``;
2. moves the rows on its path, window-aware (a row whose window has ended restarts at the actual
   amount, in the new window): for a *database* admission the reservation lives in the rows and is
   replaced by the actual amount if its window is still current; for a *hot* admission (Redis or
   the local table) the rows hold settled usage only and the actual amount is added.

Invariant: a row's usage is the sum of its window's UsageRecords (plus, for database admissions,
the reservations in flight); the hot counters are rebuilt from it.

**Budget alerts**: once the batch has committed, ``alerts.after_commit`` records the alert
thresholds its rows reached, in a short transaction of its own (``governance.metering.alerts``);
a failure of its own never fails the write.

**Exactly one writer charges.** The unique ``request_id`` and, for a database admission, the delete
of its ``CounterLease`` row in the same transaction decide who charges the rows: the owner's settle,
a journal replay or the lease reaper (status ``REAPED_STATUS``). Each :class:`Recorded` tells the
caller what to settle the hot copy with: its own amounts (also for a ``Charge.retried`` whose first
commit was not acknowledged: the rows were moved by that commit and are left alone), the existing
record's amounts (the reaper finishing a settle whose hot part never ran), or nothing.

Failures: ``OperationalError`` is retried ``ATTEMPTS`` times, then raised for the caller to retry
the whole batch; an ``IntegrityError`` (a key, team or customer deleted in flight) is retried once
with the missing references cleared; anything else logs every entry of the batch (ids, model,
tokens, cost; no secrets) so that it can be replayed, and is raised.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import IntegrityError, OperationalError

from governance.metering import alerts
from governance.metering.counters.base import BUDGET, HOT_BACKENDS, TOKENS, Admission, Counter
from governance.metering.counters.database import delete_leases
from governance.metering.counters.rows import (
    FIELDS,
    CounterRow,
    counter_state,
    lock_rows,
    row_key,
    save_rows,
    set_state,
    unique_rows,
)
from governance.metering.db_pipeline import pipelined
from governance.metering.sqlite_lock import write_transaction
from governance.metering.usage_rows import clear_missing_references, insert_usage_rows
from governance.models import UsageRecord

logger = logging.getLogger("bifrost.ledger")
ATTEMPTS = 3
# The status of a record the lease reaper wrote: no answer, the worker serving the request died.
REAPED_STATUS = 0


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the proxy knows about a finished request, besides its cost and total tokens."""

    provider: str
    model: str
    status_code: int
    virtual_key_id: str | uuid.UUID | None = None
    team_id: str | uuid.UUID | None = None
    customer_id: str | uuid.UUID | None = None
    provider_key_id: str | uuid.UUID | None = None
    request_type: str = "chat_completion"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    latency_ms: int = 0
    streamed: bool = False
    priced: bool = True
    price_source: str | None = None  # which price it was charged at (``UsageRecord.price_source``)
    estimated: bool = False
    created_at: datetime | None = None
    http_request_id: str = ""  # the request's id as its client sees it (``UsageRecord.http_request_id``)
    fallback_index: int = 0
    error_type: str = ""
    error_message: str = ""
    input_cost: Decimal | None = None  # the parts of the cost (``UsageRecord.input_cost``), when priced here
    output_cost: Decimal | None = None
    # (request body, response body, truncated) when content logging is on (``models.content``).
    content: tuple[str, str, bool] | list | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    """One request to write: its entry (None for a bare release), admission and actual amounts."""

    entry: LedgerEntry | None
    admission: Admission
    cost: Decimal
    total_tokens: int
    actuals: list[Decimal | int]
    # A second attempt after a failure whose commit is unknown (``enforcement.settle_many``).
    retried: bool = False
    # What the record says: whether the upstream was reached (None: unknown, reaped elsewhere).
    upstream_reached: bool | None = True
    # The lease reaper settling a dead owner's reservation.
    reaping: bool = False


class Recorded(NamedTuple):
    """The outcome of one charge."""

    charged: bool  # this call wrote the UsageRecord and charged the rows
    record_id: int | None  # the request's UsageRecord, if there is one
    hot: list[Decimal | int] | None  # what to settle the hot copy with; None: leave it alone


def record_many(charges: list[Charge], *, now: datetime) -> list[Recorded]:
    """``record`` for a batch of requests in ONE transaction: each counter row is locked and
    written once for the whole batch, so requests sharing a budget do not queue on its row lock
    one commit at a time. Returns a ``Recorded`` per charge, in order."""
    check_references = False
    for attempt in range(1, ATTEMPTS + 1):
        try:
            results, moved = _record_batch(charges, now, check_references)
            # After the commit, not inside it: the ledger's transaction then touches its tables
            # in the same order as ever (see ``alerts.after_commit``).
            alerts.after_commit(moved, now)
            return results
        except IntegrityError as exc:
            # Optimistic: references are checked only once a batch has failed on one (a key,
            # team, customer or provider key deleted while its request was in flight).
            if check_references:
                for charge in charges:
                    _log_lost(charge.entry, charge.admission, charge.cost, charge.total_tokens, exc)
                raise
            check_references = True
        except OperationalError as exc:
            if attempt == ATTEMPTS:
                # The database is away: nothing is lost (the caller retries the batch, and past
                # its memory bound the writer journals it to disk), so one line, not one per entry.
                logger.warning(
                    "ledger batch not written; the caller retries it",
                    extra={"requests": len(charges), "error": type(exc).__name__},
                )
                raise
            time.sleep(0.05 * attempt)
        except Exception as exc:
            for charge in charges:
                _log_lost(charge.entry, charge.admission, charge.cost, charge.total_tokens, exc)
            raise
    raise AssertionError("unreachable")


def _applies(admission: Admission, actuals: list[Decimal | int]) -> bool:
    return admission.backend == "database" or (admission.backend in HOT_BACKENDS and any(actuals))


def _holds_db_lease(admission: Admission) -> bool:
    return admission.backend == "database" and admission.lease is not None and admission.lease.db_id > 0


def _record_batch(
    charges: list[Charge], now: datetime, check_references: bool
) -> tuple[list[Recorded], list[CounterRow]]:
    """Answers a ``Recorded`` per charge and the counter rows the batch moved."""
    with write_transaction(), pipelined():
        # Lock the counter rows *before* inserting: the record ids are then allocated while the
        # rows are held, which orders them against a Redis rebuild's snapshot of the same rows.
        counters = [
            c for charge in charges if _applies(charge.admission, charge.actuals) for c in charge.admission.counters
        ]
        rows = lock_rows(counters) if counters else {}
        # A database admission is settled by whoever deletes its lease: if it is gone, its
        # reservation was already settled (by the reaper, or by this settle's own first attempt).
        owned = delete_leases([c.admission.lease.db_id for c in charges if _holds_db_lease(c.admission)])
        gone = {
            index
            for index, charge in enumerate(charges)
            if _holds_db_lease(charge.admission) and charge.admission.lease.db_id not in owned
        }
        # Parsed once: the insert, its RETURNING and the lookup below all take the UUID.
        request_ids = [uuid.UUID(str(charge.admission.request_id)) for charge in charges]
        records = [
            _row(charge, charge.entry, now, request_ids[index])
            for index, charge in enumerate(charges)
            if charge.entry is not None and index not in gone
        ]
        if check_references:
            clear_missing_references(records)
        inserted = insert_usage_rows(records, returning=True)
        results: list[Recorded] = []
        moves = _Moves(rows, now, batched=not any(c.admission.backend == "database" for c in charges))
        for index, charge in enumerate(charges):
            admission, actuals = charge.admission, charge.actuals
            apply = _applies(admission, actuals)
            release = admission.backend == "database"
            charged, record_id = index not in gone, None
            if charged and charge.entry is not None:
                record_id = inserted.get(request_ids[index])
                charged = record_id is not None
            if charged:
                if apply:
                    moves.apply(admission, actuals, release=release)
                results.append(Recorded(True, record_id, actuals))
                continue
            elsewhere = _settled_elsewhere(charge, _existing(admission.request_id), index in gone)
            if elsewhere is not None:
                results.append(elsewhere)
                continue
            # A different admission that reuses a recorded request id: it charges nothing and
            # gives its own reservation back.
            zeros = [Decimal("0") if c.kind == BUDGET else 0 for c in admission.counters]
            if apply:
                moves.apply(admission, zeros, release=release)
            results.append(Recorded(False, None, zeros))
        moved = unique_rows(moves.done())
        save_rows(moved)
    return results, moved


def _existing(request_id: str) -> tuple | None:
    """``(id, status_code, cost, total_tokens, upstream_reached)`` of the request's record."""
    return (
        UsageRecord.objects.filter(request_id=uuid.UUID(str(request_id)))
        .values_list("pk", "status_code", "cost", "total_tokens", "upstream_reached")
        .first()
    )


def _settled_elsewhere(charge: Charge, found: tuple | None, lease_gone: bool) -> Recorded | None:
    """The result of a charge whose request already has its record (or whose lease is gone); None
    when it is another admission reusing the request id, which releases its own reservation."""
    admission = charge.admission
    if found is None:
        return Recorded(False, None, None)  # the lease went with a settle that wrote no record
    record_id, status, cost, tokens, reached = found
    if charge.reaping:
        if admission.backend == "database":
            return Recorded(False, record_id, None)
        # The owner wrote the record but died before settling the hot copy: the reaper settles it
        # with the record's amounts (only if it removes the lease, so only once).
        amounts: list[Decimal | int] = []
        for counter in admission.counters:
            if counter.kind == BUDGET:
                amounts.append(Decimal(cost))
            elif counter.kind == TOKENS:
                amounts.append(int(tokens))
            else:
                amounts.append(0 if reached is False else 1)
        return Recorded(False, record_id, amounts)
    if status == REAPED_STATUS:
        return Recorded(False, record_id, None)  # the reaper settled it, hot copy included
    if charge.retried:
        # This settle's own first attempt committed (only its acknowledgement was lost): the
        # record and the rows are in; the hot copy is settled with the record's id.
        return Recorded(False, record_id, charge.actuals)
    return Recorded(False, record_id, None) if lease_gone else None


def _row(charge: Charge, entry: LedgerEntry, now: datetime, request_id: uuid.UUID) -> dict[str, Any]:
    """The UsageRecord's field values (``entry`` is the charge's)."""
    fields = {name: getattr(entry, name) for name in entry.__slots__}  # asdict deep-copies: slow
    fields["created_at"] = fields["created_at"] or now
    fields.update(
        request_id=request_id,
        cost=charge.cost,
        total_tokens=charge.total_tokens,
        upstream_reached=charge.upstream_reached,
    )
    return fields


class _Moves:
    """The counter rows' moves of one batch, applied to the locked rows in memory (the caller saves).

    Admissions settle in charge order. When none of the batch's holds a database reservation
    (``batched``: every move is ``usage + actual``, amounts never negative), a row's moves are
    summed first and its window worked out once per row instead of once per request: the same
    result, as each addition after the first finds the window the first one opened. A counter
    met with other window settings than the sum it joins (its limit edited while the batch's
    requests ran) applies that sum first and starts another, so moves keep their order."""

    def __init__(self, rows: dict[tuple[str, str], CounterRow], now: datetime, *, batched: bool) -> None:
        self.rows, self.now, self.batched = rows, now, batched
        self.changed: list[CounterRow] = []
        self.sums: dict[tuple[str, str, str], list[Any]] = {}  # row, kind -> [counter, amount]

    def apply(self, admission: Admission, actuals: list[Decimal | int], *, release: bool) -> None:
        for counter, mark, actual in zip(admission.counters, admission.marks, actuals, strict=True):
            key = row_key(counter)
            row = self.rows.get(key)
            if row is None:
                continue
            if release or not self.batched:
                self._move(counter, row, actual, mark if release else None)
                continue
            summed = self.sums.get((*key, counter.kind))
            if summed is None:
                self.sums[(*key, counter.kind)] = [counter, actual]
            elif (summed[0].duration, summed[0].calendar_aligned) == (counter.duration, counter.calendar_aligned):
                summed[1] += actual
            else:
                self._move(summed[0], row, summed[1], None)
                summed[0], summed[1] = counter, actual

    def done(self) -> list[CounterRow]:
        for (label, spec_id, _), (counter, amount) in self.sums.items():
            self._move(counter, self.rows[(label, spec_id)], amount, None)
        self.sums = {}
        return self.changed

    def _move(self, counter: Counter, row: CounterRow, actual: Decimal | int, mark: Any) -> None:
        """``actual`` onto the row's usage in its current window, less the admission's
        reservation when ``mark`` says it is still there (a database admission released)."""
        usage, start, _ = counter_state(counter, row, self.now)
        last_reset = getattr(row, FIELDS[counter.kind][1])
        # The reservation is still in the row only if the row is in the window it was made in.
        reserved = mark is not None and last_reset == mark and last_reset >= start
        set_state(counter, row, usage - (counter.reserve if reserved else 0) + actual, start)
        self.changed.append(row)


def _log_lost(entry: LedgerEntry | None, admission: Admission, cost: Decimal, tokens: int, exc: BaseException) -> None:
    logger.error(
        "ledger write failed; usage kept in this log line for replay",
        extra={
            "request_id": admission.request_id,
            "backend": admission.backend,
            "cost": str(cost),
            "total_tokens": tokens,
            "budget_ids": admission.budget_ids,
            "rate_limit_ids": admission.rate_limit_ids,
            "entry": {k: str(v) for k, v in asdict(entry).items()} if entry else None,
            "error": type(exc).__name__,
        },
    )
