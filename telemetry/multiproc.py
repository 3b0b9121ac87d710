"""prometheus-client's multiprocess mode under gunicorn: one directory of metric files per server start.

Every gunicorn worker writes its figures to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR``;
``/metrics``, whichever worker answers it, sums them (``telemetry.exposition``). The variable must
be set before a worker imports ``prometheus_client``, so the master sets it when it starts
(``gunicorn.conf.py`` ``on_starting``, or ``bifrost_site.serve_granian``'s startup hook: :func:`prepare`)
and every worker inherits it.

- The directory is ``BIFROST_DATA_DIR/metrics/<master pid>``, made empty at start; directories of
  masters that no longer run are removed then. An operator's own ``PROMETHEUS_MULTIPROC_DIR`` is
  used as it is, emptied of metric files at start (what prometheus-client asks for).
- A worker that exits is marked dead (``child_exit``: :func:`worker_exited`): its gauges leave the
  ``live*`` aggregates, its counters stay in the sums.
- Without the variable (``manage.py runserver``, tests, shell) the metrics live in the process's
  plain registry.

Imports nothing of prometheus-client at module level (see the package doc).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
BASE_DIR = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """``BIFROST_DATA_DIR`` as ``bifrost_site.settings`` reads it (the master has no Django)."""
    raw = (os.environ.get("BIFROST_DATA_DIR") or "").strip()
    return Path(raw or BASE_DIR / "var").resolve()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare() -> Path:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` for this server start (see the module doc); returns it."""
    given = (os.environ.get(ENV) or "").strip()
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        return directory
    root = data_dir() / "metrics"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old.is_dir() and old.name.isdigit() and not _alive(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    directory = root / str(os.getpid())
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    os.environ[ENV] = str(directory)
    return directory


def worker_exited(pid: int) -> None:
    """A worker is gone: its live gauges no longer count (its counters still do)."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def server_stopped() -> None:
    """The master exits: its directory (made by :func:`prepare`) goes with it."""
    directory = os.environ.get(ENV, "")
    root = data_dir() / "metrics"
    if directory and Path(directory).parent == root and Path(directory).name == str(os.getpid()):
        shutil.rmtree(directory, ignore_errors=True)
