"""The ledger's local journal: usage the database cannot take yet, kept on disk instead of in memory.

Past ``governance.metering.writer``'s memory bound (``BIFROST_LEDGER_MEMORY_ROWS``), each new usage
row or settlement is appended here, and answered once it is on disk:

- **Files.** ``BIFROST_DATA_DIR/ledger-journal/<database>/`` (engine and name, hashed: a journal is
  never replayed into another database). Each process writes its own *segment* files,
  ``<pid>-<token>-<n>.jsonl``: a header line, then one JSON object per entry, a usage row
  (``{"n": 7, "row": {...}}``) or a settlement (``{"n": 8, "settle": {...}}``) holding every field
  needed to write the UsageRecord and settle the counters exactly (ids, models and amounts only,
  never a key or a secret). Whichever waiting thread leads writes and ``fsync``s a group of
  entries (group commit); ``append`` returns once its lines are durable.
- **Ownership is a lock.** A segment is created under a temporary name, ``flock``-ed, then renamed
  into place; its process holds the lock until it closes it (after ``SEAL_IDLE_SECONDS`` without a
  new entry, at ``SEGMENT_ENTRIES``, or when the process dies, SIGKILL included). A file nobody
  holds is complete: a replayer claims it with a non-blocking ``flock`` and keeps it locked while
  it replays, so each file has one replayer at a time, and a replayer that dies frees it.
- **Replay** (``replay_pending``: every worker's journal thread at start and every
  ``REPLAY_SECONDS``, or ``manage.py replay_ledger_journal``) goes through a claimed file in
  batches of ``REPLAY_BATCH``. Usage rows are inserted as the writer inserts them (idempotent on
  ``request_id``). Settlements go through ``enforcement.settle_many`` marked ``retrying``: a
  UsageRecord that already exists (a commit whose acknowledgement was lost before the entry was
  journaled) is charged neither to the database counters nor twice, and its hot copy is settled
  with the record's id.
- **Exactly once across crashes.** Before a batch the replayer appends ``{"replaying": [a, b]}``
  and after it ``{"replayed": b}`` (``{"abandoned": [a, b]}`` when the database went away: then
  nothing of the hot copy was touched); a later replayer skips what is ``replayed``. A batch whose
  outcome is unknown (its replayer died after ``replaying``), and an entry journaled ``maybe`` (a
  batch a worker was still writing when it exited), may have been settled, hot copy included: the
  unique ``request_id`` keeps the database side exact, and the replayer first drops the hot copies
  of those counters (``forget``) so they are rebuilt from the rows, whose record-id watermark then
  skips the repeated settle. Such an entry is only replayed once no process can still settle it
  (the file is unlocked only when its writer or replayer has exited).

Accepted imprecision (only after a crash mid-replay or an exit with a write in flight): dropping a
hot copy also forgets the reservations of other requests in flight on those counters until they
settle, as a Redis restart does. Unreadable lines (a write torn before its ``fsync`` returned, a
damaged file) and entries the database refuses for good are copied to ``failed/`` beside the
journal and logged, never dropped silently.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connection, connections

logger = logging.getLogger("bifrost.ledger")

VERSION = 1
SUFFIX = ".jsonl"
SEGMENT_ENTRIES = 10_000
SEAL_IDLE_SECONDS = 1.0
REPLAY_BATCH = 500
REPLAY_SECONDS = 2.0
REPLAY_MAX_BACKOFF = 5.0
# The database is away: stop replaying and try again later (anything else is the entry's fault).
OUTAGE = (OperationalError, InterfaceError)
# Only classes of these packages are rebuilt from a journal line.
TRUSTED_MODULES = ("governance.", "proxy.")
# Where the classes named by journals written before the metering package existed live now: a
# journal outlives an upgrade made during a database outage, and must still replay.
MOVED_MODULES = {
    "governance.enforcement": "governance.metering.enforcement",
    "governance.ledger": "governance.metering.ledger",
    "governance.counters": "governance.metering.counters",
}


class JournalError(Exception):
    """The journal could not be written (disk full, no permission, ...)."""


def directory() -> Path:
    """This database's journal directory (engine and name; host and port may differ between processes)."""
    db = connections[DEFAULT_DB_ALIAS].settings_dict
    ident = f"{db['ENGINE']}|{db['NAME']}"
    vendor = db["ENGINE"].rsplit(".", 1)[-1]
    return Path(settings.DATA_DIR) / "ledger-journal" / f"{vendor}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


# --- encoding -------------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    """JSON for the values a usage row or a settlement holds; every non-JSON type is tagged."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return {"$d": str(value)}
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"$u": str(value)}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v) for v in value]}
    if isinstance(value, dict):
        return {"$map": {str(k): _encode(v) for k, v in value.items()}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"$obj": f"{cls.__module__}:{cls.__qualname__}", "f": fields}
    raise TypeError(f"cannot journal a {type(value).__name__}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$d" in value:
        return Decimal(value["$d"])
    if "$t" in value:
        return datetime.fromisoformat(value["$t"])
    if "$u" in value:
        return uuid.UUID(value["$u"])
    if "$tuple" in value:
        return tuple(_decode(v) for v in value["$tuple"])
    if "$map" in value:
        return {k: _decode(v) for k, v in value["$map"].items()}
    if "$obj" in value:
        cls = _class(value["$obj"])
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(**{k: _decode(v) for k, v in value["f"].items() if k in names})
    raise ValueError(f"unknown journal value {sorted(value)}")


def _class(name: str) -> type:
    module, _, qualname = name.partition(":")
    for old, new in MOVED_MODULES.items():
        if module == old or module.startswith(old + "."):
            module = new + module[len(old) :]
    if not module.startswith(TRUSTED_MODULES):
        raise ValueError(f"journal names an untrusted class {name!r}")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and dataclasses.is_dataclass(found)):
        raise ValueError(f"journal names {name!r}, not a dataclass")
    return found


def encode_entry(kind: str, item: Any, *, maybe: bool = False) -> bytes:
    """One entry's line without its sequence number: ``{"row": ...}`` or ``{"settle": ...}``."""
    body: dict[str, Any] = {kind: _encode(item)}
    if maybe:
        body["maybe"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def decode_entry(entry: dict) -> tuple[str, Any]:
    """``("row", fields)`` or ``("settle", Settlement)`` from a parsed entry line."""
    for kind in ("row", "settle"):
        if kind in entry:
            return kind, _decode(entry[kind])
    raise ValueError("journal line is neither a row nor a settlement")


# --- writing ----------------------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Batch:
    lines: list[bytes] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None


@dataclass
class _Segment:
    fd: int
    name: str
    entries: int = 0


class Journal:
    """One process's writing side: segments it holds locked, appended with group commit."""

    def __init__(self, path: Path) -> None:
        self.directory = path
        self._token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._cond = threading.Condition()
        self._batch: _Batch | None = None
        self._writing = False
        self._segment: _Segment | None = None
        self._segments = 0
        self._last_append = 0.0
        self._episode = 0  # entries written since spilling started
        self._keep_open = False
        self._retired: list[int] = []  # segments closed while ``keep_open``: their locks are kept
        self.written = 0  # entries written by this process, ever

    def append(self, kind: str, items: Iterable[Any], *, maybe: bool = False) -> None:
        """Write ``items`` (usage-row dicts or settlements); returns once they are on disk."""
        lines = [encode_entry(kind, item, maybe=maybe) for item in items]
        if not lines:
            return
        with self._cond:
            if self._batch is None:
                self._batch = _Batch()
            batch = self._batch
            batch.lines += lines
            while not batch.done:
                if self._writing:
                    self._cond.wait()
                    continue
                # Lead: write everything queued so far, ours included, with one write and one fsync.
                # ``batch`` is still the open one: a batch taken by a leader is done before
                # ``_writing`` drops.
                self._writing, current, self._batch = True, batch, None
                self._cond.release()
                try:
                    self._write(current.lines)
                except Exception as exc:  # noqa: BLE001 - handed to every thread whose lines these were
                    current.error = exc
                finally:
                    self._cond.acquire()
                    self._writing, current.done = False, True
                    self._cond.notify_all()
        if batch.error is not None:
            raise JournalError(f"ledger journal write failed: {type(batch.error).__name__}") from batch.error

    def _write(self, lines: list[bytes]) -> None:
        segment = self._segment or self._open_segment()
        first = segment.entries + 1
        data = b"".join(b'{"n":%d,%s\n' % (first + i, line[1:]) for i, line in enumerate(lines))
        try:
            _write_all(segment.fd, data)
            os.fsync(segment.fd)
        except OSError:
            # Whatever reached the file stays there (a torn last line is set aside by the replay);
            # the next append starts a new segment.
            self._close_segment()
            raise
        segment.entries += len(lines)
        self._episode += len(lines)
        self.written += len(lines)
        self._last_append = time.monotonic()
        if segment.entries >= SEGMENT_ENTRIES:
            self._close_segment()

    def _open_segment(self) -> _Segment:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._segments += 1
        name = f"{self._token}-{self._segments:04d}{SUFFIX}"
        temporary = self.directory / f".{name}.new"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            # Locked before it gets a name replayers look at: nobody can claim it while it grows.
            fcntl.flock(fd, fcntl.LOCK_EX)
            header = {"journal": VERSION, "pid": os.getpid(), "opened": datetime.now().astimezone().isoformat()}
            _write_all(fd, json.dumps(header, separators=(",", ":")).encode() + b"\n")
            os.fsync(fd)
            os.rename(temporary, self.directory / name)
            _fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            raise
        if self._episode == 0:
            logger.warning(
                "ledger backlog past its memory bound: spilling usage to the local journal",
                extra={"bound": settings.LEDGER_MEMORY_ROWS, "journal": name},
            )
        self._segment = _Segment(fd, name)
        return self._segment

    def _close_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        if self._keep_open:
            self._retired.append(segment.fd)  # locked until the process exits
        else:
            os.close(segment.fd)  # drops the lock: the file is complete and may be replayed

    def seal_if_idle(self, idle_seconds: float = SEAL_IDLE_SECONDS) -> None:
        """Close the open segment once nothing was appended for ``idle_seconds`` (spilling stopped)."""
        with self._cond:
            if self._keep_open or self._writing or time.monotonic() - self._last_append < idle_seconds:
                return
            if self._segment is not None:
                self._close_segment()
            if self._episode:
                logger.warning(
                    "ledger backlog back within its memory bound: spilling stopped",
                    extra={"journaled": self._episode},
                )
                self._episode = 0

    def keep_open(self) -> None:
        """Never close the open segment again (the process is exiting with writes possibly in
        flight: the entries journaled as ``maybe`` must not be replayed while it lives)."""
        with self._cond:
            self._keep_open = True

    def open_names(self) -> set[str]:
        segment = self._segment
        return {segment.name} if segment is not None else set()

    def close(self) -> None:
        """Close every segment, kept-open ones included (their files become claimable)."""
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._keep_open = False
            self._close_segment()
            retired, self._retired = self._retired, []
            for fd in retired:
                os.close(fd)


# --- replay ---------------------------------------------------------------------------------------


@dataclass
class Replayed:
    """What one ``replay_pending`` call did."""

    files: int = 0
    rows: int = 0
    settlements: int = 0
    failed: int = 0


def _claim(path: Path) -> int | None:
    """An fd holding ``path``'s lock, or None when a live process holds it or it is gone."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
    except (FileNotFoundError, PermissionError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Replayed and removed by another process between our open and our lock?
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return fd


def _progress(path: Path) -> tuple[int, list[tuple[int, int]], bool]:
    """(entries fully replayed up to, ranges whose replay outcome is unknown, ends with a newline)."""
    done, open_ = 0, []
    last = b"\n"
    with open(path, "rb") as reader:
        for raw in reader:
            last = raw[-1:]
            if not raw.startswith((b'{"replay', b'{"abandoned')):
                continue
            try:
                marker = json.loads(raw)
            except ValueError:
                continue
            if "replaying" in marker:
                open_.append(tuple(marker["replaying"]))
            elif "replayed" in marker:
                done = max(done, int(marker["replayed"]))
            elif "abandoned" in marker:
                span = tuple(marker["abandoned"])
                if span in open_:
                    del open_[len(open_) - 1 - open_[::-1].index(span)]
    return done, [span for span in open_ if span[1] > done], last == b"\n"


class _File:
    """A claimed journal file being replayed (``fd`` holds its lock and takes the markers)."""

    def __init__(self, fd: int, path: Path, write_rows: Callable[[list[dict]], None], result: Replayed) -> None:
        self.fd, self.path, self.write_rows, self.result = fd, path, write_rows, result
        self.done, self.unsure, newline = _progress(path)
        self.needs_newline = not newline
        self.unreadable: list[bytes] = []

    def mark(self, marker: dict) -> None:
        data = json.dumps(marker, separators=(",", ":")).encode() + b"\n"
        if self.needs_newline:  # a torn last line: keep the marker on a line of its own
            data, self.needs_newline = b"\n" + data, False
        _write_all(self.fd, data)
        os.fsync(self.fd)

    def replay(self) -> None:
        batch: list[tuple[dict, bytes]] = []
        # A reader of its own: with O_APPEND every marker written through ``fd`` moves its offset.
        with open(self.path, "rb") as reader:
            for raw in reader:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    # No sequence number to remember it by: set aside once the whole file is done.
                    self.unreadable.append(raw if raw.endswith(b"\n") else raw + b"\n")
                    continue
                if not isinstance(entry, dict) or not isinstance(entry.get("n"), int):
                    continue  # the header or a replay marker
                if entry["n"] <= self.done:
                    continue
                batch.append((entry, raw))
                if len(batch) >= REPLAY_BATCH:
                    self.replay_batch(batch)
                    batch = []
        if batch:
            self.replay_batch(batch)

    def set_aside(self, lines: list[bytes], reason: str) -> None:
        """Keep entries that cannot be replayed in ``failed/`` for an operator (before the batch
        holding them is marked replayed, so none is lost if the replay stops here)."""
        if not lines:
            return
        kept = self.path.parent / "failed"
        kept.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(kept / self.path.name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        self.result.failed += len(lines)
        logger.error(
            "ledger journal entries could not be replayed; kept for an operator",
            extra={"journal": self.path.name, "entries": len(lines), "reason": reason, "kept_in": str(kept)},
        )

    def replay_batch(self, batch: list[tuple[dict, bytes]]) -> None:
        first, last = batch[0][0]["n"], batch[-1][0]["n"]
        rows: list[tuple[dict, bytes, Any]] = []
        settles: list[tuple[dict, bytes, Any]] = []
        refused: list[bytes] = []
        for entry, raw in batch:
            try:
                kind, item = decode_entry(entry)
            except (ValueError, TypeError, AttributeError, ImportError):
                refused.append(raw)
                continue
            (rows if kind == "row" else settles).append((entry, raw, item))
        self.mark({"replaying": [first, last]})
        try:
            refused += self._rows(rows)
            refused += self._settle(settles)
        except OUTAGE:
            # Nothing of the hot copy was touched (``settle_many`` leaves it alone when the
            # database fails); what the database may have committed is found by request_id.
            self.mark({"abandoned": [first, last]})
            raise
        self.set_aside(refused, "undecodable or refused by the database")
        self.mark({"replayed": last})
        self.done = last
        self.result.rows += len(rows)
        self.result.settlements += len(settles)

    def _rows(self, rows: list[tuple[dict, bytes, dict]]) -> list[bytes]:
        if not rows:
            return []
        try:
            self.write_rows([item for _, _, item in rows])
            return []
        except OUTAGE:
            raise
        except Exception:  # noqa: BLE001 - not an outage: find the row(s) the database refuses
            logger.exception("ledger journal rows failed as a batch; writing them one by one")
        return _one_by_one(rows, self.write_rows)

    def _settle(self, settles: list[tuple[dict, bytes, Any]]) -> list[bytes]:
        from governance.metering import enforcement

        if not settles:
            return []
        for _, _, item in settles:
            item.admission.state = "retrying"
        unsure = [item for entry, _, item in settles if entry.get("maybe") or self._unsure(entry["n"])]
        if unsure:
            forget_hot_copies(unsure)
        try:
            enforcement.settle_many([item for _, _, item in settles])
            return []
        except OUTAGE:
            raise
        except Exception:  # noqa: BLE001 - not an outage: find the entries the database refuses
            logger.exception("ledger journal settlements failed as a batch; settling them one by one")
        # The failed call may have settled hot copies (``settle_many`` does so even when the ledger
        # write failed for another reason than an outage): rebuild them from the database first.
        forget_hot_copies([item for _, _, item in settles])

        def settle_again(items: list[Any]) -> None:
            for item in items:  # a fresh copy: the failed call changed the admission's state
                item.admission.state = "retrying"
            enforcement.settle_many(items)

        return _one_by_one(settles, settle_again)

    def _unsure(self, n: int) -> bool:
        return any(a <= n <= b for a, b in self.unsure)

    def finish(self) -> None:
        self.set_aside(self.unreadable, "unreadable line (a write torn by a crash, or a damaged file)")
        self.path.unlink()
        _fsync_dir(self.path.parent)


def forget_hot_copies(settlements: list[Any]) -> None:
    """Drop the hot copies (Redis or the local table) of these settlements' counters, so that
    they are rebuilt from the database rows on next use."""
    from governance.metering.counters import CountersUnavailable, hot_counters

    backend = hot_counters()
    if backend is None:
        return
    counters = {}
    for item in settlements:
        for counter in item.admission.counters:
            counters[(counter.kind, counter.spec_id, counter.duration, counter.calendar_aligned)] = counter
    try:
        backend.forget(list(counters.values()))
    except CountersUnavailable:
        # Marked down: its first successful call bumps the epoch, which rebuilds every hot copy.
        logger.warning("could not drop hot counters before a journal replay; they are rebuilt on reconnect")


def pending(path: Path | None = None) -> bool:
    """Whether journal files wait in ``path`` (this database's directory by default), being written
    or not yet replayed. The lease reaper leaves this host's dead processes alone meanwhile: their
    journaled settlements, replayed first, charge what the requests really used (and remove their
    leases), where reaping would charge the worst case."""
    path = path or directory()
    try:
        return any(name.endswith(SUFFIX) and not name.startswith(".") for name in os.listdir(path))
    except FileNotFoundError:
        return False


def _remove_stillborn(path: Path) -> None:
    """A segment its writer died creating (before it was named, so before any entry): remove it."""
    fd = _claim(path)
    if fd is not None:
        try:
            path.unlink()
        finally:
            os.close(fd)


def _one_by_one(entries: list[tuple[dict, bytes, Any]], write: Callable[[list[Any]], object]) -> list[bytes]:
    """After a batch failed for another reason than an outage: write its entries one at a time,
    each decoded afresh, and return the raw lines of those the database refuses."""
    refused = []
    for entry, raw, _ in entries:
        _, item = decode_entry(entry)
        try:
            write([item])
        except OUTAGE:
            raise
        except Exception:  # noqa: BLE001 - this entry is refused; the others still go in
            refused.append(raw)
    return refused


def replay_pending(path: Path, *, write_rows: Callable[[list[dict]], None], skip: Set[str] = frozenset()) -> Replayed:
    """Claim and replay every journal file in ``path`` that no live process holds.

    Raises ``OperationalError``/``InterfaceError`` when the database goes away (the file is left,
    with its progress, for a later call)."""
    result = Replayed()
    try:
        names = sorted(p.name for p in path.iterdir())
    except FileNotFoundError:
        return result
    probed = False
    for name in names:
        if name.startswith(".") and name.endswith(".new"):
            _remove_stillborn(path / name)
            continue
        if name in skip or name.startswith(".") or not name.endswith(SUFFIX):
            continue
        if not probed:
            # Is the database there at all? Cheaper than claiming and reading a file to find out.
            connection.ensure_connection()
            probed = True
        fd = _claim(path / name)
        if fd is None:
            continue
        started, before = time.monotonic(), dataclasses.replace(result)
        try:
            replaying = _File(fd, path / name, write_rows, result)
            replaying.replay()
            replaying.finish()
        finally:
            os.close(fd)
        result.files += 1
        logger.warning(
            "ledger journal replayed",
            extra={
                "journal": name,
                "rows": result.rows - before.rows,
                "settlements": result.settlements - before.settlements,
                "set_aside": result.failed - before.failed,
                "seconds": round(time.monotonic() - started, 3),
                "pid": os.getpid(),
            },
        )
    return result


def run_replayer(journal: Journal, *, write_rows: Callable[[list[dict]], None], stop: threading.Event) -> None:
    """A worker's journal thread: closes its idle segment, replays claimable files (at start,
    then every ``REPLAY_SECONDS``; backing off while the database is away) until ``stop``."""
    delay = 0.0
    while not stop.wait(delay):
        delay = REPLAY_SECONDS
        try:
            journal.seal_if_idle()
            replay_pending(journal.directory, write_rows=write_rows, skip=journal.open_names())
        except OUTAGE:
            delay = REPLAY_MAX_BACKOFF
        except Exception:  # noqa: BLE001 - keep the thread alive; the files stay for the next round
            logger.exception("ledger journal replay failed")
        finally:
            connection.close()
