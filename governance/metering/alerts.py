"""Budget alert detection: which alert thresholds a ledger write took a budget's usage to.

``ledger.record_many`` calls :func:`after_commit` with the counter rows a batch moved, once that
batch has committed, in a short transaction of its own. For each budget row whose usage in its current
window is at or above ``threshold`` percent of ``max_limit`` for a threshold not yet recorded in
that window, it inserts a ``BudgetAlert`` with ``ON CONFLICT DO NOTHING`` on the unique
``(budget, window_start, threshold)`` and, when this statement inserted it, one pending
``AlertDelivery`` per enabled webhook. The sender (``governance.metering.alert_delivery``) takes
them from there once the transaction commits.

Decisions:

- **Exactly once** across workers and hosts is the unique constraint's: whichever transaction
  inserts first wins, the others' inserts do nothing.
- **After the commit**, not inside the ledger's transaction: the ledger's transaction keeps
  touching its tables in the order it always has (counter rows, usage records, rollups), which
  PostgreSQL's table locks (a ``TRUNCATE``, a migration) also take them in; an alert insert
  there, into a table that sorts first, could deadlock with them. A process that dies between
  the two commits leaves the threshold unrecorded: the budget's next settle in the window
  records it ("reached and not yet recorded", below).
- **"Reached and not yet recorded"** rather than "went from below to at/above": the same alerts
  in the usual case, and it cannot miss one. In database-counter mode a row also holds the
  reservations of requests in flight, which settle below their estimates: usage can pass a
  threshold between two settles without any one settle crossing it. A threshold added while
  usage is already above it alerts on the next settle.
- **Window**: ``window_start`` is the row's ``last_reset`` once moved (``rows.set_state``): a row
  whose window ended restarts from 0 in a new window, and a manual reset starts one, so each
  alerts again. Windows are the rows' (the durable, settled usage); the spend reported is the
  row's usage, which in database-counter mode includes reservations in flight.
- **Cost**: thresholds and the limit come with the locked rows (``rows._READ_ONLY``), so a write
  that reaches no new threshold costs a few comparisons and no query. This process remembers
  the thresholds it has seen recorded per budget and window (``_known``): past a threshold, each
  process issues its insert once per window, not once per request.
- **Failure**: never costs the ledger its write (already committed): a failure is logged and the
  threshold stays unrecorded until the budget's next settle.
- **crossed_at** is the ledger's ``now`` (the settle time); deliveries are due at once by the
  wall clock (``timezone.now()``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections, transaction
from django.utils import timezone

from governance.metering.counters.rows import CounterRow, column
from governance.metering.sqlite_lock import write_transaction
from governance.models import AlertDelivery, AlertWebhook, Budget, BudgetAlert

logger = logging.getLogger("bifrost.alerts")

# Set when this process committed a delivery: its sender thread wakes at once instead of at its
# next poll.
delivery_due = threading.Event()

# budget pk -> (window start, thresholds known to be recorded in that window).
_known: dict[str, tuple[datetime, frozenset[int]]] = {}
_known_lock = threading.Lock()
# Budgets are few; the cap only bounds memory against a pathological number of them.
_KNOWN_MAX = 100_000


def after_commit(rows: Iterable[CounterRow], now: datetime) -> None:
    """Record the thresholds the moved ``rows`` reached (see the module docstring)."""
    try:
        candidates = _reached(rows)
    except Exception:  # noqa: BLE001 - a bad stored value must not cost the ledger its write
        logger.exception("budget alert check failed; no alert for this write")
        return
    if not candidates:
        return
    try:
        with write_transaction():
            _record(candidates, now)
    except (OperationalError, InterfaceError) as exc:
        # The usage is committed; the threshold is still unrecorded, so the budget's next settle
        # in this window records it.
        logger.warning("budget alert not recorded yet: database unavailable", extra={"error": type(exc).__name__})
    except Exception:  # noqa: BLE001 - rolled back; the usage write stands
        logger.exception("budget alert not recorded", extra={"budget_ids": [str(r.pk) for r, _ in candidates]})


def _reached(rows: Iterable[CounterRow]) -> list[tuple[CounterRow, list[int]]]:
    candidates = []
    for row in rows:
        if row.model is not Budget:
            continue
        budget: Any = row  # a budget's CounterRow: its slots are filled from the row's columns
        thresholds = budget.alert_thresholds
        usage: Decimal = budget.current_usage
        if not thresholds or usage <= 0:
            continue
        limit: Decimal = budget.max_limit
        reached = [t for t in thresholds if usage * 100 >= limit * t]
        if not reached:
            continue
        known = _known.get(str(row.pk))
        done = known[1] if known is not None and known[0] == budget.last_reset else frozenset()
        todo = [t for t in reached if t not in done]
        if todo:
            candidates.append((row, todo))
    return candidates


def _remember(budget_id: str, window: datetime, thresholds: Iterable[int]) -> None:
    with _known_lock:
        known = _known.get(budget_id)
        done = known[1] if known is not None and known[0] == window else frozenset()
        if len(_known) >= _KNOWN_MAX and budget_id not in _known:
            _known.clear()
        _known[budget_id] = (window, done | frozenset(thresholds))


def forget_known() -> None:
    """Drop what this process remembers (tests; a budget's alerts deleted by hand)."""
    with _known_lock:
        _known.clear()


class _Insert:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` of one alert, prepared once per backend.

    PostgreSQL and SQLite (3.35+) both speak it; the ORM's ``bulk_create(ignore_conflicts=True)``
    cannot say which rows it inserted, and only the inserting transaction may create deliveries.
    """

    def __init__(self, alias: str) -> None:
        conn = connections[alias]
        quote = conn.ops.quote_name
        meta = BudgetAlert._meta
        names = ("budget", "window_start", "threshold", "spend", "limit", "crossed_at")
        self.fields = [column(BudgetAlert, name) for name in names]
        columns = ", ".join(quote(f.column) for f in self.fields)
        target = ", ".join(quote(column(BudgetAlert, n).column) for n in ("budget", "window_start", "threshold"))
        placeholders = ", ".join(["%s"] * len(self.fields))
        # Identifiers come from the model; values are parameters.
        self.sql = (
            f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders}) "  # noqa: S608
            f"ON CONFLICT ({target}) DO NOTHING RETURNING {quote(meta.pk.column)}"
        )

    def params(self, values: tuple[Any, ...], alias: str) -> list[Any]:
        conn = connections[alias]
        return [f.get_db_prep_save(v, conn) for f, v in zip(self.fields, values, strict=True)]


_inserts: dict[str, _Insert] = {}


def _statement(alias: str) -> _Insert:
    vendor = connections[alias].vendor
    if vendor not in _inserts:
        _inserts[vendor] = _Insert(alias)
    return _inserts[vendor]


def _record(candidates: list[tuple[CounterRow, list[int]]], now: datetime) -> None:
    alias = DEFAULT_DB_ALIAS
    statement = _statement(alias)
    created: list[int] = []
    committed: list[tuple[str, datetime, list[int]]] = []
    with connections[alias].cursor() as cursor:
        for row, thresholds in candidates:
            budget: Any = row
            budget_id, window = str(row.pk), budget.last_reset
            mine, theirs = [], []
            for threshold in thresholds:
                values = (row.pk, window, threshold, budget.current_usage, budget.max_limit, now)
                cursor.execute(statement.sql, statement.params(values, alias))
                inserted = cursor.fetchone()
                if inserted is None:
                    theirs.append(threshold)  # recorded by a committed transaction (it waited for it)
                else:
                    created.append(int(inserted[0]))
                    mine.append(threshold)
            if theirs:
                _remember(budget_id, window, theirs)
            if mine:
                committed.append((budget_id, window, mine))
    if created:
        webhooks = list(AlertWebhook.objects.filter(enabled=True).values_list("pk", flat=True))
        wall = timezone.now()
        AlertDelivery.objects.bulk_create(
            [
                AlertDelivery(alert_id=alert_id, webhook_id=webhook, next_attempt_at=wall, created_at=wall)
                for alert_id in created
                for webhook in webhooks
            ]
        )
        logger.info(
            "budget alert recorded",
            extra={
                "alerts": [
                    {"budget_id": budget_id, "thresholds": thresholds} for budget_id, _, thresholds in committed
                ],
                "deliveries": len(created) * len(webhooks),
            },
        )

        def on_commit() -> None:
            for budget_id, window, thresholds in committed:
                _remember(budget_id, window, thresholds)
            if webhooks:
                delivery_due.set()

        transaction.on_commit(on_commit, using=alias)
