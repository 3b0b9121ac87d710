"""Counter state in database rows: locking in the fixed order, windows, and applying changes.

Both the database backend (check-and-reserve) and the ledger (catch-up and settling) move the
``current_usage``/``last_reset`` columns through these helpers, inside a short transaction:

- rows are locked with ``select_for_update`` in one global order (rate limits, then budgets;
  within each, provider config -> VK -> team -> customer, then primary key), so two
  transactions never wait on each other in a cycle;
- new values are computed in Python with exact ``Decimal`` arithmetic while the rows are locked
  (an ``F()`` expression would be evaluated in floating point by SQLite) and written back with
  one ``bulk_update`` per table. On SQLite the IMMEDIATE transaction already serialises writers.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db.models import Case, IntegerField, Model, Value, When

from governance.counters.base import BUDGET, REQUESTS, TOKENS, Counter
from governance.models import Budget, RateLimit

FIELDS = {
    BUDGET: ("current_usage", "last_reset"),
    TOKENS: ("token_current_usage", "token_last_reset"),
    REQUESTS: ("request_current_usage", "request_last_reset"),
}

_LEVEL_ORDER = Case(
    When(provider_config__isnull=False, then=Value(0)),
    When(virtual_key__isnull=False, then=Value(1)),
    When(team__isnull=False, then=Value(2)),
    default=Value(3),
    output_field=IntegerField(),
)


def model_for(counter: Counter) -> type[Model]:
    return Budget if counter.kind == BUDGET else RateLimit


def row_key(counter: Counter) -> tuple[str, str]:
    return ("budget" if counter.kind == BUDGET else "rate_limit", counter.spec_id)


def lock_rows(counters: list[Counter] | tuple[Counter, ...], *, lock: bool = True) -> dict[tuple[str, str], Model]:
    """Fetch (and lock, in the fixed order) the rows behind ``counters``; deleted rows are absent."""
    rows: dict[tuple[str, str], Model] = {}
    for label, model in (("rate_limit", RateLimit), ("budget", Budget)):
        ids = sorted({c.spec_id for c in counters if row_key(c)[0] == label})
        if not ids:
            continue
        queryset = model.objects.filter(pk__in=ids).order_by(_LEVEL_ORDER, "pk")
        if lock:
            queryset = queryset.select_for_update()
        for row in queryset:
            rows[(label, str(row.pk))] = row
    return rows


def counter_state(counter: Counter, row: Model, now: datetime) -> tuple[Decimal | int, datetime, datetime]:
    """``(usage in the current window, window start, window end)`` of ``counter`` in ``row``."""
    usage_field, reset_field = FIELDS[counter.kind]
    last_reset = getattr(row, reset_field)
    start, end = counter.window(last_reset, now)
    if last_reset < start:
        # The stored window has ended: usage restarts at zero (the write happens on the next change).
        return (Decimal("0") if counter.kind == BUDGET else 0), start, end
    return getattr(row, usage_field), start, end


def set_state(counter: Counter, row: Model, usage: Decimal | int, window_start: datetime) -> datetime:
    """Write usage and anchor onto the row object; returns the anchor (the reservation's mark)."""
    usage_field, reset_field = FIELDS[counter.kind]
    anchor = max(getattr(row, reset_field), window_start)
    zero = Decimal("0") if counter.kind == BUDGET else 0
    setattr(row, usage_field, max(usage, zero))
    setattr(row, reset_field, anchor)
    return anchor


def save_rows(rows: list[Model]) -> None:
    """One UPDATE per table for every changed row (bulk_update leaves config columns alone)."""
    budgets = [r for r in rows if isinstance(r, Budget)]
    limits = [r for r in rows if isinstance(r, RateLimit)]
    if budgets:
        Budget.objects.bulk_update(budgets, ["current_usage", "last_reset"])
    if limits:
        RateLimit.objects.bulk_update(
            limits, ["token_current_usage", "token_last_reset", "request_current_usage", "request_last_reset"]
        )


def unique_rows(rows: list[Model]) -> list[Model]:
    seen: dict[int, Model] = {}
    for row in rows:
        seen.setdefault(id(row), row)
    return list(seen.values())
