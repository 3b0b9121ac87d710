"""The worker's usage writer: plain usage rows and governed settlements, batched off the request thread.

Without ``start_writer`` (tests, shell, commands) ``record`` inserts at once and ``settle`` calls
``enforcement.settle_many`` at once. Under gunicorn (``start_writer`` from ``post_worker_init``) both
only queue: a writer thread inserts rows and a settler thread settles, each taking whatever arrived
within ``WINDOW_SECONDS`` (20 ms, up to ``BATCH``) as one batch, so a burst costs one INSERT, or
one row lock and one commit per shared budget, instead of one each. Rules:

- **Never dropped while the database is away**: a batch it cannot take (rows: ``DatabaseError``;
  settlements: ``OperationalError``/``InterfaceError``) is retried with back-off; until its settle
  has run a request keeps its worst-case reservation (errs towards refusing). A batch that fails
  for any other reason is logged (settlements in full, by the ledger) and let go, so that it cannot
  block the ones behind it.
- **Bounded memory**: at most ``BIFROST_LEDGER_MEMORY_ROWS`` rows and settlements are held (queued
  or in a batch being written); past the bound ``record`` and ``settle`` append the entry to this
  process's journal (``governance.metering.journal``) and return once it is on disk. A journal
  thread per worker replays journals at start and every few seconds, each entry exactly once.
- **Exit** (``flush`` from gunicorn's ``worker_exit``, SIGTERM included): the queues are drained;
  what the database does not take is journaled, and a batch still in its hands after
  ``IN_FLIGHT_GRACE_SECONDS`` is journaled as ``maybe`` (replayed without double counting).
- **Rows** are idempotent on ``request_id``; a reference deleted while its request was in flight
  is cleared, as ``ON DELETE SET NULL`` would.

Accepted imprecision: SIGKILL loses what the worker held in memory: the last ``WINDOW_SECONDS`` of
rows plus the write in progress while the database answers, at most the bound during an outage.
For governed requests that means their actual amounts: the lease reaper charges their reservations.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
)
from django.utils import timezone

from governance.metering import journal
from governance.metering.sqlite_lock import write_transaction
from governance.metering.usage_rows import clear_missing_references, insert_usage_rows

if TYPE_CHECKING:
    from governance.metering.enforcement import Settlement

logger = logging.getLogger("bifrost.ledger")

_queue: queue.Queue[dict] | None = None
_thread: threading.Thread | None = None
_settlements: queue.Queue | None = None
_idle = threading.Condition()
_pending = 0
BATCH = 500
# How long the writer collects rows after the first one: a burst becomes one INSERT.
WINDOW_SECONDS = 0.02
# Usage rows + settlements held in memory before new ones go to the journal (start_writer).
_bound = 10_000
_journal: journal.Journal | None = None
# Set by ``flush`` at exit: the threads journal what the database does not take, and stop replaying.
_closing = threading.Event()
# When a writer or settler last failed to reach the database (monotonic seconds).
_last_failure = -1e9
_journal_error_logged = -1e9
# Exit: how long a batch already in the database's hands may take before it is journaled as "maybe".
IN_FLIGHT_GRACE_SECONDS = 2.0


class _Held:
    """A batch a writer or settler thread took from its queue (``flush`` journals it at exit)."""

    __slots__ = ("kind", "items", "journaled")

    def __init__(self, kind: str, items: list) -> None:
        self.kind, self.items, self.journaled = kind, items, False


_held_lock = threading.Lock()
_held: set[_Held] = set()


def record(fields: dict) -> None:
    """Store one ``UsageRecord`` (given as its field values; the model is built by the writer)."""
    global _pending
    if _queue is None:
        _write([fields])
        return
    if _spilled("row", fields):
        return
    with _idle:
        _pending += 1
    _queue.put(fields)


def settle(settlement: Settlement) -> None:
    """Settle a governed request (an ``enforcement.Settlement``): queued under gunicorn, else now."""
    global _pending
    if _settlements is None:
        from governance.metering import enforcement

        enforcement.settle_many([settlement])
        return
    if _spilled("settle", settlement):
        return
    with _idle:
        _pending += 1
    _settlements.put(settlement)


def _spilled(kind: str, item: dict[str, Any] | Settlement) -> bool:
    """Past the memory bound (or exiting): append ``item`` to the journal; False to queue it."""
    global _journal_error_logged
    if _journal is None or (_pending < _bound and not _closing.is_set()):
        return False
    try:
        _journal.append(kind, [item])
    except (journal.JournalError, TypeError, ValueError):
        # Held in memory instead (over the bound) rather than lost; said once a minute, not per request.
        if time.monotonic() - _journal_error_logged > 60:
            _journal_error_logged = time.monotonic()
            logger.exception("could not journal usage; keeping it in memory past the bound")
        return False
    return True


def _take(kind: str, source: queue.Queue) -> _Held:
    """The next batch from ``source``: the first entry and whatever else arrives within
    ``WINDOW_SECONDS`` (up to ``BATCH``), registered from the start so ``flush`` can journal it."""
    first = source.get()
    with _held_lock:
        held = _Held(kind, [first])
        _held.add(held)
    # Sleep rather than wait on the queue: one wake-up per batch instead of one per row.
    time.sleep(WINDOW_SECONDS)
    with _held_lock:
        while len(held.items) < BATCH and not held.journaled:
            try:
                held.items.append(source.get_nowait())
            except queue.Empty:
                break
    return held


def _let_go(held: _Held) -> None:
    with _held_lock:
        _held.discard(held)


def _journal_held(held: _Held, *, maybe: bool) -> bool:
    """Journal a held batch once (by its thread, or by ``flush`` at exit); False if impossible."""
    with _held_lock:
        return _journal_held_locked(held, maybe=maybe)


def _journal_held_locked(held: _Held, *, maybe: bool) -> bool:
    if held.journaled:
        return True
    if _journal is None:
        return False
    try:
        _journal.append(held.kind, held.items, maybe=maybe)
    except (journal.JournalError, TypeError, ValueError):
        logger.exception("could not journal usage at exit", extra={"entries": len(held.items)})
        return False
    held.journaled = True
    return True


def _back_off(held: _Held, delay: float) -> bool:
    """Wait before the next attempt at a batch the database did not take. True when the batch was
    journaled instead (the worker is exiting): the thread is done with it."""
    global _last_failure
    _last_failure = time.monotonic()
    if _closing.wait(delay) or held.journaled:
        return _journal_held(held, maybe=False)
    return False


@dataclass(frozen=True, slots=True)
class _Work:
    """What one batch thread does: the usage-row writer or the settler."""

    kind: str  # the ``_Held`` kind: "row" or "settle"
    write: Callable[[list[Any]], object]
    outage: tuple[type[Exception], ...]  # the database is away: retry the whole batch later
    max_delay: float  # the longest pause between attempts
    unit: str  # what the log counts
    retrying: str
    failed: str  # not an outage: retrying cannot help, the batch is let go


def _settle_batch(batch: list[Any]) -> object:
    from governance.metering import enforcement  # enforcement imports the counters, which import this

    # Nothing of a batch that fails is settled (see ``settle_many``): its requests keep their
    # reservations until the database is back, then settle exactly once.
    return enforcement.settle_many(batch)


def _batch_loop(work: _Work, source: queue.Queue) -> None:
    global _pending
    while True:
        held = _take(work.kind, source)
        batch = held.items
        delay = 0.1
        try:
            while True:
                try:
                    work.write(batch)
                    break
                except work.outage as exc:
                    logger.warning(work.retrying, extra={work.unit: len(batch), "error": type(exc).__name__})
                    connection.close()
                    if _back_off(held, delay):
                        break
                    delay = min(delay * 2, work.max_delay)
                except Exception:
                    # A batch the database can never accept must not block the ones behind it.
                    # Settlements: ``governance.metering.ledger`` has logged each in full for replay.
                    logger.exception(work.failed, extra={work.unit: len(batch)})
                    connection.close()
                    break
        finally:
            _let_go(held)
            with _idle:
                _pending -= len(batch)
                _idle.notify_all()


ROWS = _Work(
    kind="row",
    write=lambda rows: _write(rows),  # looked up per batch: tests replace ``_write``
    outage=(DatabaseError,),
    max_delay=5.0,
    unit="rows",
    retrying="usage write failed; retrying",
    failed="usage rows dropped",
)
SETTLES = _Work(
    kind="settle",
    write=_settle_batch,
    outage=(OperationalError, InterfaceError),
    max_delay=2.0,
    unit="requests",
    retrying="settle batch failed; retrying",
    failed="settle batch failed",
)


def start_writer() -> None:
    """Switch this process to queued writes and deferred settles (call once per worker process),
    with at most ``BIFROST_LEDGER_MEMORY_ROWS`` of them in memory and the rest journaled."""
    global _queue, _thread, _settlements, _bound, _journal
    if _thread is not None and _thread.is_alive():
        return
    _bound = settings.LEDGER_MEMORY_ROWS
    _journal = journal.Journal(journal.directory())
    _settlements = queue.Queue()
    threading.Thread(target=_batch_loop, args=(SETTLES, _settlements), name="bifrost-settler", daemon=True).start()
    _queue = queue.Queue()
    _thread = threading.Thread(target=_batch_loop, args=(ROWS, _queue), name="bifrost-ledger-writer", daemon=True)
    _thread.start()
    threading.Thread(
        target=journal.run_replayer,
        args=(_journal,),
        kwargs={"write_rows": write_rows, "stop": _closing},
        name="bifrost-ledger-journal",
        daemon=True,
    ).start()


def backlog() -> tuple[int, int]:
    """(entries held in memory, entries this process has journaled since it started)."""
    return _pending, _journal.written if _journal is not None else 0


def oldest_pending_seconds() -> float:
    """Age of the oldest usage row or settlement held in memory (queued, or in a batch being
    written), 0.0 when none: how far this process's ledger lags (``/metrics``)."""
    with _held_lock:
        heads = [held.items[0] for held in _held if held.items and not held.journaled]
    for source in (_queue, _settlements):
        try:
            heads.append(source.queue[0])  # type: ignore[union-attr]
        except (AttributeError, IndexError):  # no writer in this process, or nothing queued
            pass
    times = [created for created in map(_created_at, heads) if created is not None]
    return max(0.0, (timezone.now() - min(times)).total_seconds()) if times else 0.0


def _created_at(item: Any) -> datetime | None:
    if isinstance(item, dict):
        return item.get("created_at")
    entry = getattr(item, "entry", None)
    if entry is not None and entry.created_at is not None:
        return entry.created_at
    admission = getattr(item, "admission", None)
    return admission.admitted_at if admission is not None else None


def flush(timeout: float = 10.0) -> bool:
    """Wait until every queued row and settlement is written; False if some are neither written
    nor journaled after ``timeout``.

    When the database does not take them (it failed in the last few seconds, or half of
    ``timeout`` went by), the rest is journaled: the threads journal the batches they hold at their
    next failure (at once when backing off) and then their queues; a batch still in the
    database's hands after ``IN_FLIGHT_GRACE_SECONDS`` is journaled as ``maybe``."""
    deadline = time.monotonic() + timeout
    patience = time.monotonic() + timeout / 2
    if not _wait_idle(lambda: _journal is not None and (_failing() or time.monotonic() >= patience), deadline):
        return _journal_backlog(deadline)
    return True


def _failing() -> bool:
    return time.monotonic() - _last_failure < 5.0


def _wait_idle(give_up: Callable[[], bool], deadline: float) -> bool:
    """Wait until nothing is pending; False as soon as ``give_up()`` or at ``deadline``."""
    with _idle:
        while _pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or give_up():
                return False
            _idle.wait(min(remaining, 0.05))
    return True


def _journal_backlog(deadline: float) -> bool:
    global _pending
    if _journal is None:
        logger.error("usage rows still queued at exit", extra={"rows": _pending})
        return False
    _journal.keep_open()  # entries journaled as "maybe" must not be replayed while this process lives
    _closing.set()
    grace = min(deadline, time.monotonic() + IN_FLIGHT_GRACE_SECONDS)
    if _wait_idle(lambda: False, grace):
        logger.warning("usage backlog journaled at exit", extra={"journaled": _journal.written})
        return True
    # A thread is still waiting on the database: journal the batches held as "maybe" and what is
    # queued behind them. Under ``_held_lock`` no thread moves entries from a queue to a batch.
    in_flight = 0
    while True:
        with _held_lock:
            for held in _held:
                if not held.journaled:
                    in_flight += len(held.items)
                    if not _journal_held_locked(held, maybe=True):
                        return False
            drained = 0
            for source, kind in ((_queue, "row"), (_settlements, "settle")):
                items = []
                while source is not None:
                    try:
                        items.append(source.get_nowait())
                    except queue.Empty:
                        break
                try:
                    _journal.append(kind, items)
                except (journal.JournalError, TypeError, ValueError):
                    logger.exception("usage lost at exit", extra={"entries": len(items)})
                    return False
                drained += len(items)
            holding = sum(len(held.items) for held in _held)
        with _idle:
            _pending -= drained
            # Taken from a queue by a thread that has not registered its batch yet?
            in_transit = _pending - holding
        if in_transit <= 0:
            break
        if time.monotonic() >= deadline:
            logger.error("usage still queued at exit", extra={"entries": in_transit})
            return False
        time.sleep(0.01)
    logger.warning(
        "usage backlog journaled at exit, with writes still in flight",
        extra={"journaled": _journal.written, "in_flight": in_flight},
    )
    return True


def write_rows(rows: list[dict]) -> None:
    """Insert usage rows now, idempotent on ``request_id`` (the journal replay writes through this)."""
    _write(rows)


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
