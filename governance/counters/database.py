"""Database counters: the embedded default and the fallback when Redis is unreachable.

Check-and-reserve is one short transaction: lock every row on the path in the fixed order,
compute each window, check every counter, and reserve on all of them or none. The transaction
ends before the proxy calls upstream; settling is a second short transaction (in
``governance.ledger``). Works on SQLite (IMMEDIATE transactions serialise writers, queued fairly
by ``governance.writes``) and PostgreSQL (row locks).

A reservation is kept in ``current_usage`` itself, so usage read from the database includes the
requests in flight. If a worker dies between admit and settle (SIGKILL, power loss) its
reservation stays counted until the window resets: the error is bounded by that request's
estimate and errs on the side of refusing, never of overshooting.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from django.db import DatabaseError

from governance.counters.base import Admission, Counter, CountersUnavailable, Violation
from governance.counters.rows import counter_state, lock_rows, row_key, save_rows, set_state, unique_rows
from governance.writes import write_transaction


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
    ) -> Admission | list[Violation]:
        try:
            with write_transaction():
                rows = lock_rows(counters)
                violations: list[Violation] = []
                plan = []
                for counter in counters:
                    row = rows.get(row_key(counter))
                    if row is None:
                        # Deleted since the caller's configuration snapshot: nothing left to enforce.
                        plan.append((counter, None, None, None))
                        continue
                    usage, start, end = counter_state(counter, row, now)
                    if counter.rejects(usage):
                        violations.append(Violation(counter, usage, end))
                    plan.append((counter, row, usage, start))
                if violations:
                    return violations
                marks = []
                for counter, row, usage, start in plan:
                    if row is None:
                        marks.append(None)
                        continue
                    marks.append(set_state(counter, row, usage + counter.reserve, start))
                save_rows(unique_rows([row for _, row, _, _ in plan if row is not None]))
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
        )
