"""gunicorn settings for the gateway, overridable from the environment (see README, "Performance").

Chosen for a small machine (measured on 2 cores, see bench/README.md):
- ``gthread`` workers: a streaming answer holds a thread, not a whole process, for its duration;
- one worker per core, 16 threads each;
- ``worker_connections`` bounded, so the kernel spreads keep-alive clients over all workers
  instead of one worker accepting every connection and halving throughput;
- each worker starts the metering threads (``governance.metering.writer``, ``.reaper`` and the
  budget alert sender ``.alert_delivery``) once it is up and drains them when it exits, SIGTERM
  included (``bifrost_site.lifecycle``, shared with ``bifrost_site.serve_granian``);
- the master gives each server start its own directory of metric files (``telemetry.multiproc``):
  ``/metrics`` sums every worker's.
"""

from __future__ import annotations

import os

from bifrost_site import serving

# The address, workers, threads and graceful timeout are the same under granian (bifrost_site/serving.py).
bind = serving.bind()
worker_class = "gthread"
workers = serving.workers()
threads = serving.threads()
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", str(threads * 2)))
keepalive = serving.KEEPALIVE_SECONDS
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))
graceful_timeout = serving.graceful_timeout()
accesslog = os.environ.get("BIFROST_ACCESSLOG") or os.environ.get("GUNICORN_ACCESSLOG") or None
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
        from bifrost_site import lifecycle

        lifecycle.worker_started(
            worker.age == 1,  # the first worker of this start
            (str(listener) for listener in worker.sockets),
            say=lambda line: worker.log.info("%s", line),
        )


def worker_exit(server, worker) -> None:
    if _serves_gateway():
        from bifrost_site import lifecycle

        lifecycle.worker_stopping(timeout=graceful_timeout)
