"""Database counters, in the Budget and RateLimit rows: the fallback of every mode but ``redis``.

They are also the primary counters of PostgreSQL without Redis and of ``GOVERNANCE_COUNTERS=database``.
Check-and-reserve is one short transaction: lock every row on the path in the fixed order
(``counters.rows``), compute each window, check every counter, and reserve on all of them or none
(a row deleted since the caller's snapshot is not enforced). The transaction ends before the proxy
calls upstream; settling is a second short transaction (in ``governance.metering.ledger``). On
SQLite IMMEDIATE transactions serialise writers, queued fairly by ``governance.metering.sqlite_lock``;
on PostgreSQL the row locks queue them.

A reservation is kept in ``current_usage`` itself, so usage read from the database includes the
requests in flight. The same transaction writes the reservation's lease (a ``CounterLease`` row,
after the row locks, so its id is ordered against a hot copy's rebuild), which the settle
transaction deletes: if the worker dies in between, the lease reaper settles the reservation. The
lease row's delete is also what makes a settle count once: the ledger charges a database admission
only if it deleted its lease.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from governance.metering.counters import leases
from governance.metering.counters.base import Admission, Counter, CountersUnavailable, Violation
from governance.metering.counters.rows import (
    FIELDS,
    CounterRow,
    column,
    counter_state,
    lock_rows,
    row_key,
    save_rows,
    set_state,
    unique_rows,
)
from governance.metering.sqlite_lock import write_transaction
from governance.models import CounterLease


class DatabaseCounters:
    """Counters kept in the Budget and RateLimit rows."""

    name = "database"

    def admit(
        self,
        *,
        request_id: uuid.UUID,
        counters: list[Counter],
        estimated_cost: Decimal,
        estimated_tokens: int,
        now: datetime,
        lease: leases.PendingLease | None = None,
    ) -> Admission | list[Violation]:
        try:
            with write_transaction():
                rows = lock_rows(counters)
                violations: list[Violation] = []
                # Per counter: its row, usage and window start, or None for a deleted row.
                plan: list[tuple[Counter, tuple[CounterRow, Decimal | int, datetime] | None]] = []
                for counter in counters:
                    row = rows.get(row_key(counter))
                    if row is None:
                        # Deleted since the caller's configuration snapshot: nothing left to enforce.
                        plan.append((counter, None))
                        continue
                    usage, start, end = counter_state(counter, row, now)
                    if counter.rejects(usage):
                        violations.append(Violation(counter, usage, end))
                    plan.append((counter, (row, usage, start)))
                if violations:
                    return violations
                marks: list[datetime | None] = []
                for counter, found in plan:
                    if found is None:
                        marks.append(None)
                        continue
                    row, usage, start = found
                    marks.append(set_state(counter, row, usage + counter.reserve, start))
                save_rows(unique_rows([found[0] for _, found in plan if found is not None]))
                # The lease after the row locks: its id is then ordered against a hot counter's
                # rebuild of these rows (``redis_backend._rebuild``, lease watermark).
                lease_id = 0 if lease is None else insert_lease(lease, marks)
        except DatabaseError as exc:
            raise CountersUnavailable(f"database counters unavailable: {type(exc).__name__}") from exc
        return Admission(
            request_id=str(request_id),
            backend=self.name,
            counters=tuple(counters),
            marks=tuple(marks),
            estimated_cost=estimated_cost,
            estimated_tokens=estimated_tokens,
            admitted_at=now,
            lease=None if lease is None else lease.lease(lease_id),
        )


# --- lease rows (plain SQL: ``insert_lease`` and ``delete_leases`` run on every admit and settle) ---


def _sql() -> tuple[BaseDatabaseWrapper, str, str]:
    conn = connections[DEFAULT_DB_ALIAS]
    return conn, conn.ops.quote_name(CounterLease._meta.db_table), conn.ops.quote_name("id")


def _prep(field: str, value: object, conn: BaseDatabaseWrapper) -> Any:
    return column(CounterLease, field).get_db_prep_value(value, conn)


def insert_lease(lease: leases.PendingLease, marks: list[datetime | None]) -> int:
    """Write a database admission's lease; returns its id (call inside the admit transaction)."""
    conn, table, pk = _sql()
    expires = datetime.fromtimestamp(lease.until_ms / 1000, tz=UTC)
    params = [
        _prep("request_id", uuid.UUID(lease.key), conn),
        lease.owner,
        _prep("expires_at", expires, conn),
        f"{lease.payload}\n{leases.database_marks_text(marks)}",
    ]
    sql = f"INSERT INTO {table} (request_id, owner, expires_at, payload) VALUES (%s, %s, %s, %s)"  # noqa: S608
    with conn.cursor() as cursor:
        if conn.features.can_return_columns_from_insert:
            cursor.execute(sql + f" RETURNING {pk}", params)
            return int(cursor.fetchone()[0])
        cursor.execute(sql, params)
        return int(cursor.lastrowid)


def delete_leases(ids: list[int]) -> set[int]:
    """Delete these lease rows; returns the ids that were there (call inside the settle
    transaction: a settle whose lease is gone was already settled by someone else)."""
    if not ids:
        return set()
    conn, table, pk = _sql()
    marks = ", ".join(["%s"] * len(ids))
    with conn.cursor() as cursor:
        if conn.features.can_return_columns_from_insert:  # DELETE ... RETURNING is as old
            cursor.execute(f"DELETE FROM {table} WHERE {pk} IN ({marks}) RETURNING {pk}", ids)  # noqa: S608
            return {int(row[0]) for row in cursor.fetchall()}
        cursor.execute(f"SELECT {pk} FROM {table} WHERE {pk} IN ({marks})", ids)  # noqa: S608
        found = {int(row[0]) for row in cursor.fetchall()}
        cursor.execute(f"DELETE FROM {table} WHERE {pk} IN ({marks})", ids)  # noqa: S608
        return found


def database_reservations(
    counters: list[Counter], rows: dict[tuple[str, str], CounterRow], now: datetime
) -> dict[tuple[str, str, str], Decimal | int]:
    """What the database admissions in flight have reserved in these (locked) rows, per
    ``(row label, id, kind)``: the reservations their leases record in the rows' current windows.

    Only admissions made while the hot counters were unusable hold database leases, so there are
    few; a rebuild of hot counters (``redis_backend._rebuild``) reads them all."""
    wanted = {(c.kind, c.spec_id) for c in counters}
    out: dict[tuple[str, str, str], Decimal | int] = {}
    for text in CounterLease.objects.values_list("payload", flat=True):
        payload, suffix = leases.decode(text)
        for counter, mark in zip(payload.counters, leases.database_marks(suffix), strict=True):
            row = rows.get(row_key(counter))
            if (counter.kind, counter.spec_id) not in wanted or row is None or mark is None:
                continue
            _, start, _ = counter_state(counter, row, now)
            last_reset = getattr(row, FIELDS[counter.kind][1])
            if last_reset == mark and last_reset >= start:  # still in the window it was made in
                key = row_key(counter) + (counter.kind,)
                out[key] = out.get(key, 0 * counter.reserve) + counter.reserve
    return out


def renew_leases(owner: str, until_ms: int) -> None:
    """The owner is alive: push its leases' expiry to ``until_ms`` (wall clock)."""
    expires = datetime.fromtimestamp(until_ms / 1000, tz=UTC)
    CounterLease.objects.filter(owner=owner).update(expires_at=expires)
