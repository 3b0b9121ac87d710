"""gunicorn settings for the gateway, overridable from the environment (see README, "Performance").

Chosen for a small machine (measured on 2 cores, see bench/README.md):
- ``gthread`` workers: a streaming answer holds a thread, not a whole process, for its duration;
- one worker per core, 16 threads each;
- ``worker_connections`` bounded, so the kernel spreads keep-alive clients over all workers
  instead of one worker accepting every connection and halving throughput;
- each worker starts the metering threads (``governance.metering.writer``, ``.reaper`` and the
  budget alert sender ``.alert_delivery``) once it is up and drains them when it exits, SIGTERM
  included;
- the master gives each server start its own directory of metric files (``telemetry.multiproc``):
  ``/metrics`` sums every worker's.
"""

from __future__ import annotations

import multiprocessing
import os

# A laptop's gateway (embedded mode) answers only this machine; production mode (DATABASE_URL or
# REDIS_URL set) is meant to be reached by others, so it listens on all interfaces. PORT moves
# either; BIFROST_BIND sets the whole address.
_production = bool(os.environ.get("DATABASE_URL") or os.environ.get("REDIS_URL"))
_host = "0.0.0.0" if _production else "127.0.0.1"  # noqa: S104 - production is reached by others
bind = os.environ.get("BIFROST_BIND") or f"{_host}:{os.environ.get('PORT') or '8080'}"
worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count()))
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", str(threads * 2)))
keepalive = 5
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
# No control socket: several instances on one host would fight over its default path.
control_socket_disable = True


def _serves_gateway() -> bool:
    # The same settings serve bench/forwarder.py, which has no Django and no ledger.
    return bool(os.environ.get("DJANGO_SETTINGS_MODULE"))


# The master's hooks run before the app is loaded (DJANGO_SETTINGS_MODULE may not be set yet); a
# metrics directory is harmless for bench/forwarder.py, which never writes to it.
def on_starting(server) -> None:
    # Before any worker imports prometheus_client: every worker writes its metrics there.
    from telemetry import multiproc

    multiproc.prepare()


def child_exit(server, worker) -> None:
    from telemetry import multiproc

    multiproc.worker_exited(worker.pid)


def on_exit(server) -> None:
    from telemetry import multiproc

    multiproc.server_stopped()


def post_worker_init(worker) -> None:
    if _serves_gateway():
        if worker.age == 1:  # the first worker of this start says where to go, once
            from bifrost_site.ready import ready_lines

            for line in ready_lines(str(listener) for listener in worker.sockets):
                worker.log.info("%s", line)

        from telemetry import metrics

        metrics.start()
        from governance.metering import alert_delivery, reaper, writer

        writer.start_writer()
        reaper.start()
        alert_delivery.start()


def worker_exit(server, worker) -> None:
    if _serves_gateway():
        from governance.metering import writer

        writer.flush(timeout=graceful_timeout)

        from telemetry import metrics

        metrics.flush()  # the last second's observations and spans

        from governance.metering import alert_delivery, reaper

        reaper.stop()
        alert_delivery.stop()
