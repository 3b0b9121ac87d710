"""Fewer network round trips for statements whose results nobody waits for, on PostgreSQL.

The ledger's batch transaction is a chain of short statements: BEGIN, a ``SELECT ... FOR UPDATE``
per counter table, the usage INSERT, the rollup upsert, an UPDATE per counter row and COMMIT.
Sent one by one, each costs a round trip to the server, and on the client a wait, a wake-up and
the socket calls around them: eight for a batch on one budget and one rate limit, more when the
batch moves more rows. In psycopg's pipeline mode a statement is queued, and the queue goes out
when a result is read or the pipeline ends: the locking SELECTs travel together, and the upsert
and every UPDATE go in one trip before COMMIT. Five round trips, whatever the batch moves.

The pipeline is entered inside the transaction: entered outside it, psycopg would add a round
trip each time Django switches autocommit off and on around it.

Nothing else changes: the statements, their order, the transaction and its outcome are the same,
and an error is raised where the result it belongs to is read or when the pipeline ends, before
COMMIT, as Django's own database error (``wrap_database_errors``), so the ledger's retries see
what they always saw. On SQLite (no pipelines) the context does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections


@contextmanager
def pipelined() -> Iterator[None]:
    """Queue the enclosed statements on PostgreSQL (see the module doc); enter it inside the
    transaction."""
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql":
        yield
        return
    conn.ensure_connection()
    with conn.wrap_database_errors, conn.connection.pipeline():
        yield
