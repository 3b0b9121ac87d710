"""Serves the gateway with granian (``python -m bifrost_site.serve_granian``; ``BIFROST_SERVER=granian
bin/run``), with the guarantees ``gunicorn.conf.py``'s hooks give under gunicorn.

granian parses HTTP in Rust (tokio + hyper) and hands each request to one of the worker's Python
threads (its "blocking threads"): a connection waiting for a request's headers, or idle between
keep-alive requests, holds no Python thread, so slow or idle clients do not stop a worker answering.

- **Master** (this process): makes the metric files' directory of this start before any worker
  exists (``telemetry.multiproc``), marks a worker that exited (its live gauges stop counting) and
  respawns it, removes the directory at exit. It never loads Django's settings.
- **Worker** (a forked ``multiprocessing`` child): loads ``bifrost_site.wsgi`` and then starts the
  metrics drain, the usage writer, the lease reaper and the alert sender once
  (``bifrost_site.lifecycle``); the first worker of the start prints the ready line.
- A worker whose master is gone (SIGKILL) stops as if it had been sent SIGTERM (gunicorn's do too).
- **SIGTERM / SIGINT** to the master: every worker stops accepting, finishes its requests in
  flight (streams included), then drains its usage queue. granian's worker returns from its serve
  loop and ends through ``multiprocessing``'s exit path, which runs ``util.Finalize`` callbacks but
  not ``atexit``'s: the drain is registered as a finalizer. A worker still busy after the graceful
  timeout is killed (SIGKILL: the lease reaper settles what it held).
- **Sockets**: each worker listens on its own socket on the same port (``SO_REUSEPORT``, granian's
  way on Linux), so the kernel spreads connections evenly over the workers. One shared socket
  (gunicorn's way) was measured: long-lived keep-alive clients then piled onto one worker in some
  runs, halving throughput. The cost: connections queued on a worker that dies are reset with
  it, and while a lone worker (``BIFROST_WORKERS=1``) is replaced the port refuses connections
  until its successor has loaded the app (a few seconds); clients retry, SDKs do by default.
- **Limits**: HTTP/1.1 only (as gunicorn; HTTP/2 would bring its own, much larger, header limit);
  a request's headers must arrive within ``KEEPALIVE_SECONDS``, which also closes idle keep-alive
  connections; hyper's 64 KiB read buffer bounds the headers (431 past about 110 KiB in all; gunicorn
  allows a 4 KiB request line and 100 fields of 8 KiB);
  at most ``BIFROST_WORKER_CONNECTIONS`` (512) open connections per worker, beyond which the
  kernel's backlog queues them; the body's limit is the gateway's own (``BIFROST_MAX_BODY_BYTES``).
- **Environment**: as gunicorn (``bifrost_site.serving``); ``BIFROST_ACCESSLOG`` (or
  ``GUNICORN_ACCESSLOG``): ``-`` for an access log on stdout, or a file's path.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import signal
import threading
import time
import types
from multiprocessing import util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.mp import MPServer, WorkerProcess

from bifrost_site import serving
from bifrost_site.env import env_int

if TYPE_CHECKING:
    from collections.abc import Callable

TARGET = "bifrost_site.wsgi:application"
HEADERS_MAX_BYTES = 64 * 1024
# Python threads that run nothing for this long are stopped by granian and made again on demand.
# Each holds its own database connection (Django's are per thread): kept as long as granian allows.
IDLE_THREAD_SECONDS = 600
# Finalizers run by decreasing priority: the drain before any of multiprocessing's own.
_DRAIN_PRIORITY = 100


def parse_bind(address: str) -> tuple[str, int] | Path:
    """``host:port``, ``[v6]:port`` or ``unix:/path`` (gunicorn's forms) as granian takes them."""
    if address.startswith("unix:"):
        return Path(address.removeprefix("unix:"))
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"BIFROST_BIND must be host:port, [v6]:port or unix:/path, got {address!r}")
    return host.strip("[]"), int(port)


def listener_url(bound: tuple[str, int] | Path) -> str:
    """The address as gunicorn names its listeners (what ``bifrost_site.ready`` reads)."""
    if isinstance(bound, Path):
        return f"unix:{bound}"
    host, port = bound
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _access_log() -> dict[str, Any]:
    """granian's access-log options for ``BIFROST_ACCESSLOG`` (``-``: stdout; else a file)."""
    where = (os.environ.get("BIFROST_ACCESSLOG") or os.environ.get("GUNICORN_ACCESSLOG") or "").strip()
    if not where:
        return {"log_access": False}
    if where == "-":
        return {"log_access": True}
    from granian.log import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"] = {"class": "logging.FileHandler", "filename": where, "formatter": "access"}
    return {"log_access": True, "log_dictconfig": config}


class GatewayServer(MPServer):
    """granian's process server, plus what the gateway needs of its master (see the module doc)."""

    def __init__(self, *, listener: str, graceful_timeout: int, **options: Any) -> None:
        super().__init__(TARGET, **options)
        self.listener = listener
        self.graceful_timeout = graceful_timeout
        self.spawned = 0  # workers started so far; a forked worker reads its own number (gunicorn's age)
        self.on_startup(self._prepare_metrics)
        self.on_shutdown(self._remove_metrics)

    @staticmethod
    def _prepare_metrics() -> None:
        # Before any worker imports prometheus_client: every worker writes its metrics there.
        from telemetry import multiproc

        multiproc.prepare()

    @staticmethod
    def _remove_metrics() -> None:
        from telemetry import multiproc

        multiproc.server_stopped()

    def _spawn_worker(self, idx: int, target: Any, callback_loader: Any) -> WorkerProcess:  # type: ignore[override]
        self.spawned += 1  # before the fork (in ``start``): the child sees its own number
        return super()._spawn_worker(idx, target, callback_loader)

    # granian has no hook when a worker exits: its two paths that reap workers are wrapped.
    def _respawn_workers(self, workers: list[int], spawn_target: Any, target_loader: Any, delay: float = 0) -> None:
        gone = [self.wrks[idx]._id() for idx in workers]
        super()._respawn_workers(workers, spawn_target, target_loader, delay)
        self._mark_dead(gone)

    def _stop_workers(self) -> None:
        gone = [worker._id() for worker in self.wrks]
        super()._stop_workers()
        self._mark_dead(gone)

    @staticmethod
    def _mark_dead(pids: list[int | None]) -> None:
        from telemetry import multiproc

        for pid in pids:
            if pid is not None:
                multiproc.worker_exited(pid)

    def load_gateway(self, target: str) -> Callable[..., Any]:
        """In the worker, before granian wraps the app: load it and start the worker's threads
        (``target`` is granian's, always ``TARGET``)."""
        from granian.log import logger

        from bifrost_site import lifecycle
        from bifrost_site.wsgi import application

        _requests_without_process_environment()
        watch = threading.Thread(
            target=_stop_with_master, args=(os.getppid(),), name="bifrost-master-watch", daemon=True
        )
        watch.start()
        lifecycle.worker_started(self.spawned == 1, [self.listener], say=lambda line: logger.info("%s", line))
        util.Finalize(
            None, lifecycle.worker_stopping, kwargs={"timeout": self.graceful_timeout}, exitpriority=_DRAIN_PRIORITY
        )
        return application


def _stop_with_master(master: int) -> None:
    """gunicorn's workers exit when their master is gone; granian's would go on serving, orphans
    holding the port beside the workers of a restarted server. This one stops the graceful way."""
    while os.getppid() == master:
        time.sleep(1.0)
    from granian.log import logger

    logger.warning("the granian master (pid %s) is gone: stopping worker %s", master, os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)


def _requests_without_process_environment() -> None:
    """granian 2.8 starts every request's WSGI environ from a copy of ``os.environ`` (CGI style):
    the gateway's secrets would be in every ``request.META``, and a variable named ``HTTP_*`` (an
    egress proxy's ``HTTP_PROXY``) would pass for a client's header and be forwarded upstream. Its
    WSGI wrapper, built right after the loader returns, reads an empty environment instead (gunicorn
    gives the app only the request's own keys)."""
    import granian.wsgi

    granian.wsgi.os = types.SimpleNamespace(environ={})  # type: ignore[assignment]


def build_server() -> GatewayServer:
    bound = parse_bind(serving.bind())
    graceful = serving.graceful_timeout()
    where: dict[str, Any] = {"uds": bound} if isinstance(bound, Path) else {"address": bound[0], "port": bound[1]}
    return GatewayServer(
        listener=listener_url(bound),
        graceful_timeout=graceful,
        **where,
        interface=Interfaces.WSGI,
        workers=serving.workers(),
        # Requests run BIFROST_THREADS at once (the slots of bifrost_site.wsgi); the other threads
        # let requests wait for their bodies without holding a slot (slow clients).
        blocking_threads=serving.threads() + serving.waiting_threads(),
        blocking_threads_idle_timeout=IDLE_THREAD_SECONDS,
        # Connections a worker holds open (idle keep-alive ones included); past it the kernel's
        # backlog queues new ones. Cheap (no Python thread each), so far above the threads.
        backpressure=env_int("BIFROST_WORKER_CONNECTIONS", 512, minimum=1),
        backlog=2048,  # gunicorn's
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(
            header_read_timeout=serving.KEEPALIVE_SECONDS * 1000, max_buffer_size=HEADERS_MAX_BYTES
        ),
        respawn_failed_workers=True,  # as gunicorn: a worker that dies is replaced
        workers_kill_timeout=graceful,
        log_level=LogLevels.info,
        **_access_log(),
    )


# granian's advice at start when a worker count is above the cores, or a worker may run more than
# 2 x cores + 1 Python threads. Both hold for this gateway's defaults, which were measured
# (serving.workers: one worker more than the cores; serving.waiting_threads: threads on which slow
# bodies wait, README "Server: granian or gunicorn"), so a new user is not told to undo them.
DEFAULT_SIZE_ADVICE = {
    "Configured number of workers appears to be higher": serving.WORKERS_VARIABLES,
    "Configuration allows spawning up to": serving.THREADS_VARIABLES,
}


class DefaultSizeAdvice(logging.Filter):
    """Drops granian's advice about a size the operator left at the gateway's measured default;
    sizes the operator set still get it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for start, variables in DEFAULT_SIZE_ADVICE.items():
            if message.startswith(start):
                return serving.set_by_operator(variables)
        return True


def main() -> None:
    # The workers inherit the master's state by fork (the metric directory's variable, their
    # number); granian would use "spawn" where fork is not the default (Python 3.14).
    multiprocessing.set_start_method("fork", force=True)
    server = build_server()  # granian's logging is configured here; its advice comes in serve()
    from granian.log import logger

    logger.addFilter(DefaultSizeAdvice())
    server.serve(target_loader=server.load_gateway)


if __name__ == "__main__":
    main()
