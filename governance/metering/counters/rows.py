"""Counter state in database rows: locking in the fixed order, windows, and applying changes.

Both the database backend (check-and-reserve) and the ledger (catch-up and settling) move the
``current_usage``/``last_reset`` columns through these helpers, inside a short transaction:

- rows are locked with ``SELECT ... FOR UPDATE`` in one global order (rate limits, then budgets;
  within each, by primary key), so two transactions never wait on each other in a cycle (any
  total order does; the primary key is the cheapest to sort by);
- new values are computed in Python with exact ``Decimal`` arithmetic while the rows are locked
  (an ``F()`` expression would be evaluated in floating point by SQLite) and written back with
  one plain UPDATE per row. On SQLite the IMMEDIATE transaction already serialises writers.

This runs on every governed request, so it speaks SQL through the cursor with statements and
value converters prepared once per model and database backend: model instances, querysets and
per-call field lookups cost several times the queries themselves here. The converters and
adapters are Django's own, so values read and written are exactly what the ORM would use.
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model

from governance.metering.counters.base import BUDGET, REQUESTS, TOKENS, Counter
from governance.models import Budget, RateLimit

FIELDS = {
    BUDGET: ("current_usage", "last_reset"),
    TOKENS: ("token_current_usage", "token_last_reset"),
    REQUESTS: ("request_current_usage", "request_last_reset"),
}

_COLUMNS = {
    Budget: ("current_usage", "last_reset"),
    RateLimit: ("token_current_usage", "token_last_reset", "request_current_usage", "request_last_reset"),
}
# Configuration read with a budget's row (never written here): what the ledger's alert check
# (``governance.metering.alerts``) compares the new usage with, at no extra query.
_READ_ONLY = {Budget: ("max_limit", "alert_thresholds"), RateLimit: ()}
_LABELS = (("rate_limit", RateLimit), ("budget", Budget))


class CounterRow:
    """The counter columns of one Budget or RateLimit row (what these helpers read and write), and
    the read-only ``_READ_ONLY`` columns of a budget."""

    __slots__ = (
        "model",
        "pk",
        *{name for table in (_COLUMNS, _READ_ONLY) for names in table.values() for name in names},
    )

    def __init__(self, model: type[Model], pk: Any, values: dict[str, Any]) -> None:
        self.model, self.pk = model, pk
        for name, value in values.items():
            setattr(self, name, value)


def column(model: type[Model], name: str) -> Field[Any, Any]:
    """``model``'s field ``name``: a concrete column (``get_field`` also answers relations, which
    these helpers never name)."""
    field = model._meta.get_field(name)
    assert isinstance(field, Field), f"{model.__name__}.{name} is not a column"
    return field


def row_key(counter: Counter) -> tuple[str, str]:
    return ("budget" if counter.kind == BUDGET else "rate_limit", counter.spec_id)


class _Statements:
    """SQL and value conversions for one model on one database backend, prepared once."""

    def __init__(self, model: type[Model], vendor_connection: BaseDatabaseWrapper) -> None:
        conn = vendor_connection
        meta = model._meta
        quote = conn.ops.quote_name
        self.pk = meta.pk
        self.fields = [column(model, name) for name in _COLUMNS[model]]
        table, pk_column = quote(meta.db_table), quote(meta.pk.column)
        columns = [meta.pk, *self.fields, *(column(model, name) for name in _READ_ONLY[model])]
        self.select_columns = ", ".join(quote(f.column) for f in columns)
        self.table, self.pk_column = table, pk_column
        self.lockable = conn.features.has_select_for_update
        # Django's converters for each column (e.g. SQLite's text -> aware datetime, REAL/text
        # -> quantised Decimal), bound to their expression as the ORM would call them.
        self.converters: list[tuple[str, list[tuple[Any, Any]]]] = []
        for field in columns:
            col = field.get_col(meta.db_table)
            found = conn.ops.get_db_converters(col) + col.get_db_converters(conn)
            self.converters.append((field.attname, [(fn, col) for fn in found]))
        assignments = ", ".join(f"{quote(f.column)} = %s" for f in self.fields)
        # Identifiers come from the model definitions, never from input; values are parameters.
        self.update = f"UPDATE {table} SET {assignments} WHERE {pk_column} = %s"  # noqa: S608

    def select(self, count: int, lock: bool) -> str:
        placeholders = ", ".join(["%s"] * count)
        sql = f"SELECT {self.select_columns} FROM {self.table} WHERE {self.pk_column} IN ({placeholders})"  # noqa: S608
        sql += f" ORDER BY {self.pk_column}"
        if lock and self.lockable:
            sql += " FOR UPDATE"
        return sql

    def convert(self, raw: tuple[Any, ...], conn: BaseDatabaseWrapper) -> dict[str, Any]:
        values = {}
        for value, (name, converters) in zip(raw, self.converters, strict=True):
            for fn, col in converters:
                value = fn(value, col, conn)
            values[name] = value
        return values


@cache
def _statements(model: type[Model], vendor: str, alias: str) -> _Statements:
    return _Statements(model, connections[alias])


def lock_rows(counters: list[Counter] | tuple[Counter, ...], *, lock: bool = True) -> dict[tuple[str, str], CounterRow]:
    """Fetch (and lock, in the fixed order) the rows behind ``counters``; deleted rows are absent.

    Every table's SELECT is sent before any result is read: in a pipeline (``db_pipeline``) they
    travel together."""
    conn = connections[DEFAULT_DB_ALIAS]
    rows: dict[tuple[str, str], CounterRow] = {}
    with ExitStack() as cursors:
        sent = []
        for label, model in _LABELS:
            ids = sorted({c.spec_id for c in counters if row_key(c)[0] == label})
            if not ids:
                continue
            statements = _statements(model, conn.vendor, DEFAULT_DB_ALIAS)
            params = [statements.pk.get_db_prep_value(pk, conn) for pk in ids]
            cursor = cursors.enter_context(conn.cursor())
            cursor.execute(statements.select(len(ids), lock), params)
            sent.append((label, model, statements, cursor))
        for label, model, statements, cursor in sent:
            for raw in cursor.fetchall():
                values = statements.convert(raw, conn)
                pk = values.pop(statements.pk.attname)
                rows[(label, str(pk))] = CounterRow(model, pk, values)
    return rows


def counter_state(
    counter: Counter, row: CounterRow | Budget | RateLimit, now: datetime
) -> tuple[Decimal | int, datetime, datetime]:
    """``(usage in the current window, window start, window end)`` of ``counter`` in ``row``."""
    usage_field, reset_field = FIELDS[counter.kind]
    last_reset = getattr(row, reset_field)
    start, end = counter.window(last_reset, now)
    if last_reset < start:
        # The stored window has ended: usage restarts at zero (the write happens on the next change).
        return (Decimal("0") if counter.kind == BUDGET else 0), start, end
    return getattr(row, usage_field), start, end


def set_state(counter: Counter, row: CounterRow, usage: Decimal | int, window_start: datetime) -> datetime:
    """Write usage and anchor onto the row object; returns the anchor (the reservation's mark)."""
    usage_field, reset_field = FIELDS[counter.kind]
    anchor = max(getattr(row, reset_field), window_start)
    zero = Decimal("0") if counter.kind == BUDGET else 0
    setattr(row, usage_field, max(usage, zero))
    setattr(row, reset_field, anchor)
    return anchor


def save_rows(rows: list[CounterRow]) -> None:
    """One UPDATE per changed row, of its counter columns only (configuration columns untouched)."""
    if not rows:
        return
    conn = connections[DEFAULT_DB_ALIAS]
    with conn.cursor() as cursor:
        for row in rows:
            statements = _statements(row.model, conn.vendor, DEFAULT_DB_ALIAS)
            params = [f.get_db_prep_save(getattr(row, f.attname), conn) for f in statements.fields]
            params.append(statements.pk.get_db_prep_value(row.pk, conn))
            cursor.execute(statements.update, params)


def unique_rows(rows: list[CounterRow]) -> list[CounterRow]:
    seen: dict[int, CounterRow] = {}
    for row in rows:
        seen.setdefault(id(row), row)
    return list(seen.values())
