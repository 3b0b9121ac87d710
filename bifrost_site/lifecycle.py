"""What every worker process serving the gateway does once it is up and when it stops, whichever
server runs it (gunicorn's ``post_worker_init`` / ``worker_exit`` in ``gunicorn.conf.py``, granian's
app loader and exit finalizer in ``bifrost_site.serve_granian``).

- ``worker_started``: the first worker of a server start prints where to go; every worker starts
  its metrics drain (``telemetry.metrics``), its usage writer and settler
  (``governance.metering.writer``), its lease reaper and its budget alert sender;
- ``worker_stopping``: after the last request in flight, the usage queues are drained (written, or
  journaled when the database does not take them within ``timeout``), the last metrics flushed,
  and the reaper and alert sender stopped.

Call both from the worker process with the app loaded (Django configured).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


def worker_started(first: bool, listeners: Iterable[str], *, say: Callable[[str], None]) -> None:
    """``listeners`` as URLs (``http://127.0.0.1:8080``) or a unix socket; ``say`` prints a line."""
    if first:  # the first worker of this start says where to go, once
        from bifrost_site.ready import ready_lines

        for line in ready_lines(listeners):
            say(line)

    from telemetry import metrics

    metrics.start()
    from governance.metering import alert_delivery, reaper, writer

    writer.start_writer()
    reaper.start()
    alert_delivery.start()


def worker_stopping(timeout: float) -> None:
    from governance.metering import writer

    writer.flush(timeout=timeout)

    from telemetry import metrics

    metrics.flush()  # the last second's observations and spans

    from governance.metering import alert_delivery, reaper

    reaper.stop()
    alert_delivery.stop()
