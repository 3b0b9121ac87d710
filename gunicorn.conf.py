"""gunicorn settings for the gateway, overridable from the environment (see README)."""

from __future__ import annotations

import multiprocessing
import os

bind = os.environ.get("BIFROST_BIND", "0.0.0.0:8080")
# gthread: a streaming answer holds a thread, not a whole process, for its duration.
worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count()))
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
# Bound the keep-alive connections one worker accepts, so the kernel spreads clients over all
# workers instead of one worker taking every connection.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", str(threads * 2)))
keepalive = 5
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
