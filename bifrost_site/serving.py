"""What the gateway's two servers (granian: ``serve_granian``, the default; gunicorn:
``gunicorn.conf.py``) read from the environment, so that switching ``BIFROST_SERVER`` keeps the
address and the sizes, and the command that starts each (``bin/run``, the tests and ``bench/``).

- ``BIFROST_BIND`` sets the whole address (``host:port``, ``[v6]:port`` or ``unix:/path``); else
  ``PORT`` (8080) on 127.0.0.1 in embedded mode and on all interfaces in production mode;
- ``BIFROST_WORKERS`` processes (one per core, plus one, by default), each running ``BIFROST_THREADS`` requests
  at once (16); the older ``GUNICORN_WORKERS`` / ``GUNICORN_THREADS`` still work; under granian a
  worker has ``BIFROST_WAITING_THREADS`` (240) more threads, on which requests wait for their
  bodies before they take one of those slots, and for their upstreams after lending theirs;
- ``BIFROST_GRACEFUL_TIMEOUT`` (or ``GUNICORN_GRACEFUL_TIMEOUT``, 30 s): after SIGTERM, how long a
  worker may finish its requests in flight and drain its usage queue before it is killed.

Imports nothing of the gateway: the servers' master processes never load Django's settings.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

from bifrost_site.env import env_int

# granian by default: HTTP parsing in Rust costs a request less CPU than gunicorn's in Python, and
# a client slow to send its headers holds no Python thread (README, "Server: granian or gunicorn").
DEFAULT_SERVER = "granian"
SERVERS = ("granian", "gunicorn")

# An idle keep-alive connection is closed after this long (gunicorn's ``keepalive``); under granian
# it also bounds the time a client may take to send a request's headers (a slow client).
KEEPALIVE_SECONDS = 5


def production_mode() -> bool:
    """DATABASE_URL or REDIS_URL set: the gateway is meant to be reached by other machines."""
    return bool(os.environ.get("DATABASE_URL") or os.environ.get("REDIS_URL"))


def bind() -> str:
    # A laptop's gateway (embedded mode) answers only this machine; production mode is reached by
    # others, so it listens on all interfaces. PORT moves either; BIFROST_BIND sets the whole address.
    host = "0.0.0.0" if production_mode() else "127.0.0.1"  # noqa: S104 - production is reached by others
    return os.environ.get("BIFROST_BIND") or f"{host}:{os.environ.get('PORT') or '8080'}"


def _first_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        if (os.environ.get(name) or "").strip():
            return env_int(name, default, minimum=1)
    return default


WORKERS_VARIABLES = ("BIFROST_WORKERS", "GUNICORN_WORKERS")
THREADS_VARIABLES = ("BIFROST_THREADS", "GUNICORN_THREADS", "BIFROST_WAITING_THREADS")


def set_by_operator(names: tuple[str, ...]) -> bool:
    """Whether any of these variables is set (else the size is this module's default)."""
    return any((os.environ.get(name) or "").strip() for name in names)


def workers() -> int:
    # One more than the cores: a worker's threads share one GIL, and while they pass it between
    # them (after every socket wait) its core would otherwise idle. Measured on 2 cores, 3
    # workers against 2: +13 % governed and +9 % plain req/s embedded, +6 % / +2 % production.
    return _first_int(WORKERS_VARIABLES, multiprocessing.cpu_count() + 1)


def threads() -> int:
    """Requests a worker runs at once (gunicorn's threads; under granian the request slots of
    ``bifrost_site.wsgi``)."""
    return _first_int(("BIFROST_THREADS", "GUNICORN_THREADS"), 16)


def waiting_threads() -> int:
    """granian: threads a worker has on top of ``threads()`` to wait for request bodies that arrive
    slowly, so that a few hundred slow clients do not hold every thread that runs requests, and
    for slow upstreams (a waiting request lends its slot: ``bifrost_site.slots``)."""
    return _first_int(("BIFROST_WAITING_THREADS",), 240)


def graceful_timeout() -> int:
    return _first_int(("BIFROST_GRACEFUL_TIMEOUT", "GUNICORN_GRACEFUL_TIMEOUT"), 30)


def server() -> str:
    """``BIFROST_SERVER`` (granian or gunicorn), checked."""
    name = (os.environ.get("BIFROST_SERVER") or DEFAULT_SERVER).strip()
    if name not in SERVERS:
        raise SystemExit(f"BIFROST_SERVER must be granian or gunicorn, got {name!r}")
    return name


def command(name: str | None = None) -> list[str]:
    """The command that serves the gateway with ``name`` (default: ``server()``), run from the
    project's directory with this virtualenv's interpreter."""
    if (name or server()) == "gunicorn":
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        return [gunicorn, "-c", "gunicorn.conf.py", "bifrost_site.wsgi:application"]
    return [sys.executable, "-m", "bifrost_site.serve_granian"]
