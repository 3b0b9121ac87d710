"""The minimal forwarder: the floor of Python forwarding on this machine.

A bare WSGI function, run under the gateway's own ``gunicorn.conf.py``, that forwards the
request body to ``BENCH_UPSTREAM`` + the same path through a pooled urllib3 connection and
relays the answer (streams chunk by chunk) — and does nothing else: no auth, no routing, no
parsing, no accounting. The gateway is measured against it.
"""

from __future__ import annotations

import os

import urllib3

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9000")
_pool = urllib3.PoolManager(maxsize=64, retries=False)
_headers = {"content-type": "application/json", "authorization": "Bearer sk-bench", "accept-encoding": "identity"}


def application(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    upstream = _pool.urlopen(
        environ["REQUEST_METHOD"],
        UPSTREAM + environ["PATH_INFO"],
        body=body,
        headers=_headers,
        preload_content=False,
        retries=False,
    )
    content_type = upstream.headers.get("content-type", "application/json")
    start_response(f"{upstream.status} OK", [("Content-Type", content_type)])
    if content_type.startswith("text/event-stream"):
        return _relay(upstream)
    data = upstream.read()
    upstream.release_conn()
    return [data]


def _relay(upstream):
    try:
        yield from upstream.read_chunked()
    finally:
        upstream.release_conn()
