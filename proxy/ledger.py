"""Writes usage rows to the database, in the request thread or in batches from a writer thread.

By default ``record`` inserts at once (one query, in the caller's thread). Under gunicorn the
worker starts a writer thread (``start_writer`` from ``gunicorn.conf.py``): ``record`` then only
queues the row and the thread inserts whatever has queued with one ``bulk_create``, so a burst
of requests costs one INSERT instead of one each. The queue is drained when the worker exits
(``flush`` from gunicorn's ``worker_exit`` hook, also on SIGTERM), so stopping a worker loses no
usage. Accepted imprecision: a worker killed with SIGKILL or crashing loses the rows still
queued: those of the last ``WINDOW_SECONDS`` (20 ms) plus the write in progress.
A failed write (database briefly unreachable) is retried with back-off, never dropped.

Requests that carry budgets or rate limits are settled through ``governance.enforcement`` (ledger
rows + counter catch-up in one transaction). Under gunicorn ``settle`` only queues the
settlement: a settler thread takes whatever finished in the last ``WINDOW_SECONDS`` and settles
it as one batch (``enforcement.settle_many``), so requests sharing a budget cost one row lock and
one commit per batch instead of one each, and the request thread is free the moment the answer
is sent. ``flush`` drains this queue too. Until its settle has run, a request keeps its
worst-case reservation: a delay errs towards refusing, never towards overshooting. While the
database cannot be reached, a batch is retried with back-off (nothing of it is settled until the
database takes all of it), so a database outage delays usage rows but loses none; a batch that
fails for any other reason is logged in full for replay and dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
)

from governance.usage_sql import clear_missing_references, insert_usage_rows
from governance.writes import write_transaction

logger = logging.getLogger("bifrost.ledger")

_queue: queue.Queue[dict] | None = None
_thread: threading.Thread | None = None
_settlements: queue.Queue | None = None
_idle = threading.Condition()
_pending = 0
BATCH = 500
# How long the writer collects rows after the first one: a burst becomes one INSERT.
WINDOW_SECONDS = 0.02


def record(fields: dict) -> None:
    """Store one ``UsageRecord`` (given as its field values; the model is built by the writer)."""
    global _pending
    if _queue is None:
        _write([fields])
        return
    with _idle:
        _pending += 1
    _queue.put(fields)


def settle(settlement) -> None:
    """Settle a governed request (an ``enforcement.Settlement``): queued under gunicorn, else now."""
    global _pending
    if _settlements is None:
        from governance import enforcement

        enforcement.settle_many([settlement])
        return
    with _idle:
        _pending += 1
    _settlements.put(settlement)


def _settle_loop() -> None:
    global _pending
    from governance import enforcement

    assert _settlements is not None
    while True:
        batch = [_settlements.get()]
        time.sleep(WINDOW_SECONDS)
        while len(batch) < BATCH:
            try:
                batch.append(_settlements.get_nowait())
            except queue.Empty:
                break
        delay = 0.1
        try:
            while True:
                try:
                    enforcement.settle_many(batch)
                    break
                except (OperationalError, InterfaceError) as exc:
                    # Nothing of the batch was settled (see ``settle_many``): the requests keep
                    # their reservations until the database is back, then settle exactly once.
                    logger.warning(
                        "settle batch failed; retrying", extra={"requests": len(batch), "error": type(exc).__name__}
                    )
                    connection.close()
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                except Exception:
                    # Not a database outage: retrying cannot help. governance.ledger has logged
                    # every entry of the batch in full for replay.
                    logger.exception("settle batch failed", extra={"requests": len(batch)})
                    connection.close()
                    break
        finally:
            with _idle:
                _pending -= len(batch)
                _idle.notify_all()


def start_writer() -> None:
    """Switch this process to queued writes and deferred settles (call once per worker process)."""
    global _queue, _thread, _settlements
    if _thread is not None and _thread.is_alive():
        return
    _settlements = queue.Queue()
    threading.Thread(target=_settle_loop, name="bifrost-settler", daemon=True).start()
    _queue = queue.Queue()
    _thread = threading.Thread(target=_run, name="bifrost-ledger-writer", daemon=True)
    _thread.start()


def flush(timeout: float = 10.0) -> bool:
    """Wait until every queued row is written; False if that took longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    with _idle:
        while _pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.error("usage rows still queued at exit", extra={"rows": _pending})
                return False
            _idle.wait(remaining)
    return True


def _run() -> None:
    global _pending
    assert _queue is not None
    while True:
        rows = [_queue.get()]
        # Sleep rather than wait on the queue: one wake-up per batch instead of one per row.
        time.sleep(WINDOW_SECONDS)
        while len(rows) < BATCH:
            try:
                rows.append(_queue.get_nowait())
            except queue.Empty:
                break
        delay = 0.1
        while True:
            try:
                _write(rows)
                break
            except DatabaseError as exc:
                logger.warning("usage write failed; retrying", extra={"rows": len(rows), "error": type(exc).__name__})
                connection.close()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                # A row the database can never accept must not block the rows behind it forever.
                logger.exception("usage rows dropped", extra={"rows": len(rows)})
                break
        with _idle:
            _pending -= len(rows)
            _idle.notify_all()


def _write(rows: list[dict]) -> None:
    """Insert; a retried row (same ``request_id``) is ignored, so a retry never counts twice."""
    try:
        _insert(rows)
    except IntegrityError:
        # A key, team, customer or provider key deleted while its request was in flight: the
        # row is kept with that reference cleared, as ON DELETE SET NULL would have done.
        clear_missing_references(rows)
        _insert(rows)


def _insert(rows: list[dict]) -> None:
    with write_transaction(savepoint=False):
        insert_usage_rows(rows)
