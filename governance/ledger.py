"""The durable ledger: one UsageRecord per finished request, and database counters kept in step.

``record()`` runs one short transaction that

1. inserts the request's ``UsageRecord`` — idempotent on ``request_id``: a second write for the
   same request (a retry after a crash between commit and acknowledgement) inserts nothing and
   charges nothing;
2. brings the database budget and rate-limit rows on the request's path up to date, window-aware
   (a row whose window has ended restarts at the actual amount, in the new window):

   - for a *database* admission the reservation lives in the rows: it is replaced by the actual
     amount (if the window it was made in is still current);
   - for a *Redis* admission the rows hold settled usage only: the actual amount is added.

So the database totals always equal the sum of the UsageRecords of the window (plus, in database
mode, the reservations of requests in flight), and a Redis restart can rebuild its counters from
the rows. The ledger write happens before the worker returns from ``settle()``; gunicorn's
graceful shutdown (SIGTERM) lets in-flight requests finish, so stopping a worker loses nothing.

Rows are locked and computed as described in ``governance.counters.rows`` (exact Decimal
arithmetic, fixed lock order). If the database cannot be written after a few attempts, the
entry is logged in full (no secrets: ids, model, tokens, cost) so that it can be replayed, and
the error is raised; the proxy's settler then tries the batch again until the database answers.
A retried batch (``Charge.retried``) may find its records already written by an attempt whose
commit was not acknowledged: those rows were updated in that same transaction and are left alone.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, OperationalError

from governance.counters.base import BUDGET, HOT_BACKENDS, Admission
from governance.counters.rows import FIELDS, counter_state, lock_rows, row_key, save_rows, set_state, unique_rows
from governance.models import UsageRecord
from governance.usage_sql import clear_missing_references, insert_usage_rows
from governance.writes import write_transaction

logger = logging.getLogger("bifrost.ledger")
ATTEMPTS = 3


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
    latency_ms: int = 0
    streamed: bool = False
    priced: bool = True
    created_at: datetime | None = None


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


def record(
    entry: LedgerEntry | None,
    *,
    admission: Admission,
    cost: Decimal,
    total_tokens: int,
    actuals: list[Decimal | int],
    now: datetime,
) -> tuple[bool, int | None]:
    """Write the ledger row and catch the database counters up: ``(charged, UsageRecord id)``.

    ``actuals`` gives, per counter of the admission, the amount to charge (cost, tokens, or 1/0
    request). ``charged`` is False when a UsageRecord for this request already existed: nothing
    is charged a second time (reservations are still released). The record id lets a rebuilt
    Redis counter tell whether its database snapshot already included this request.
    """
    return record_many([Charge(entry, admission, cost, total_tokens, actuals)], now=now)[0]


def record_many(charges: list[Charge], *, now: datetime) -> list[tuple[bool, int | None]]:
    """``record`` for a batch of requests in ONE transaction: each counter row is locked and
    written once for the whole batch, so requests sharing a budget do not queue on its row lock
    one commit at a time. Returns ``(charged, record id)`` per charge, in order."""
    check_references = False
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _record_batch(charges, now, check_references)
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
                for charge in charges:
                    _log_lost(charge.entry, charge.admission, charge.cost, charge.total_tokens, exc)
                raise
            time.sleep(0.05 * attempt)
        except Exception as exc:
            for charge in charges:
                _log_lost(charge.entry, charge.admission, charge.cost, charge.total_tokens, exc)
            raise
    raise AssertionError("unreachable")


def _applies(admission: Admission, actuals: list[Decimal | int]) -> bool:
    return admission.backend == "database" or (admission.backend in HOT_BACKENDS and any(actuals))


def _record_batch(charges: list[Charge], now: datetime, check_references: bool) -> list[tuple[bool, int | None]]:
    with write_transaction():
        # Lock the counter rows *before* inserting: the record ids are then allocated while the
        # rows are held, which orders them against a Redis rebuild's snapshot of the same rows.
        counters = [
            c for charge in charges if _applies(charge.admission, charge.actuals) for c in charge.admission.counters
        ]
        rows = lock_rows(counters) if counters else {}
        records = [_row(charge, now) for charge in charges if charge.entry is not None]
        if check_references:
            clear_missing_references(records)
        inserted = insert_usage_rows(records, returning=True)
        results, changed = [], []
        for charge in charges:
            admission, actuals = charge.admission, charge.actuals
            apply = _applies(admission, actuals)
            charged, record_id = True, None
            if charge.entry is not None:
                record_id = inserted.get(uuid.UUID(str(admission.request_id)))
                charged = record_id is not None
            if not charged and charge.retried:
                # The first attempt committed (only its acknowledgement was lost): the record and
                # the rows' changes are already in, so nothing more here; the caller settles the
                # hot copy with the existing record's id.
                results.append((False, _record_id(admission.request_id)))
                continue
            if not charged:
                actuals = [Decimal("0") if c.kind == BUDGET else 0 for c in admission.counters]
            if apply:
                changed += _apply(admission, rows, actuals, now, release=admission.backend == "database")
            results.append((charged, record_id))
        save_rows(unique_rows(changed))
    return results


def _row(charge: Charge, now: datetime) -> dict:
    """The UsageRecord's field values."""
    entry = charge.entry
    fields = {name: getattr(entry, name) for name in entry.__slots__}  # asdict deep-copies: slow
    fields["created_at"] = fields["created_at"] or now
    fields.update(request_id=charge.admission.request_id, cost=charge.cost, total_tokens=charge.total_tokens)
    return fields


def _record_id(request_id: str) -> int | None:
    return UsageRecord.objects.filter(request_id=uuid.UUID(str(request_id))).values_list("pk", flat=True).first()


def _apply(admission: Admission, rows: dict, actuals: list[Decimal | int], now: datetime, *, release: bool) -> list:
    """Move the in-memory rows of ``admission``'s counters; returns them (the caller saves)."""
    changed = []
    for counter, mark, actual in zip(admission.counters, admission.marks, actuals, strict=True):
        row = rows.get(row_key(counter))
        if row is None:
            continue
        usage, start, _ = counter_state(counter, row, now)
        last_reset = getattr(row, FIELDS[counter.kind][1])
        # The reservation is still in the row only if the row is in the window it was made in.
        reserved = release and mark is not None and last_reset == mark and last_reset >= start
        new_usage = usage - (counter.reserve if reserved else 0) + actual
        set_state(counter, row, new_usage, start)
        changed.append(row)
    return changed


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
