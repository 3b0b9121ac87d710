"""Fixtures of the proxy tests: the mock upstream, a live gateway, in-process calls, a provider setup.

- ``mock``: ``bench.mock_upstream`` in a subprocess for the whole session (``mock.stats()``,
  reset before every test that uses it).
- ``gateway``: the real thing, served as ``bin/run`` serves it (``BIFROST_SERVER``: granian by
  default, or gunicorn with ``gunicorn.conf.py``) on a free port, sharing the
  test database (a SQLite file or PostgreSQL's ``test_`` database) and Redis. Tests that use it
  need committed rows: they use ``transactional_db``. Its config cache TTL is 0, because the
  test database is emptied between tests without signals.
- ``call``: the inference WSGI function called in this process (for query counts and the
  allow-list rows), with the proxy's ``close_old_connections`` patched out (as Django's test client
  detaches it): it would drop the test transaction's connection.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import patch

import pytest
import urllib3
from django.conf import settings
from django.db import connection

from bifrost_site import serving
from governance.metering import snapshot
from governance.services import provider_create, provider_key_create, virtual_key_create

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class Mock:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self._http = urllib3.PoolManager()

    def stats(self) -> dict:
        return json.loads(self._http.request("GET", f"{self.url}/_mock/stats").data)

    def reset(self) -> None:
        self._http.request("POST", f"{self.url}/_mock/reset")


@pytest.fixture(scope="session")
def mock_server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.mock_upstream", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield Mock(port)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def mock(mock_server) -> Mock:
    mock_server.reset()
    return mock_server


@pytest.fixture(autouse=True)
def _fresh_snapshots():
    snapshot.invalidate_local()
    yield
    snapshot.invalidate_local()


@dataclass
class Gateway:
    url: str
    log: Path


@pytest.fixture(scope="session")
def gateway(django_db_setup, django_db_blocker, mock_server, tmp_path_factory):
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        database_url = f"sqlite:///{db['NAME']}"
    else:
        user, host, port = db["USER"] or "postgres", db["HOST"] or HOST, db["PORT"] or 5432
        database_url = f"postgres://{user}@{host}:{port}/{db['NAME']}"
    port = free_port()
    log = tmp_path_factory.mktemp("gateway") / "server.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "BIFROST_ENCRYPTION_KEY": settings.BIFROST_ENCRYPTION_KEY,
        "BIFROST_BIND": f"{HOST}:{port}",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "8",
        "GOVERNANCE_CONFIG_CACHE_SECONDS": "0",
        "BIFROST_LOG_LEVEL": "WARNING",
    }
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            serving.command(),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(port, proc, 90.0)  # granian listens once a worker has loaded the app
        yield Gateway(f"http://{HOST}:{port}", log)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def wsgi_environ(
    path: str,
    raw: bytes = b"",
    headers: dict[str, str] | None = None,
    method: str = "POST",
    content_length: str | None = None,
    query: str = "",
) -> dict:
    """The environ a WSGI server hands over for this request."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(raw)) if content_length is None else content_length,
        "CONTENT_TYPE": "application/json",
        "wsgi.input": io.BytesIO(raw),
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def send(
    path: str,
    raw: bytes = b"",
    headers: dict[str, str] | None = None,
    method: str = "POST",
    content_length: str | None = None,
    query: str = "",
) -> Answer:
    """One request through ``proxy.wsgi`` in this process, environ built by hand (any method,
    path, query or Content-Length a server could hand over; header values as WSGI gives them)."""
    from proxy.wsgi import application

    environ = wsgi_environ(path, raw, headers, method, content_length, query)
    captured = {}

    def start_response(status, response_headers):
        captured["status"] = int(status.split()[0])
        captured["headers"] = {k.lower(): v for k, v in response_headers}

    # Keep the test's database connection: the proxy closes "old" connections after each request
    # like a server would, and inside the test transaction that would drop it.
    with patch("proxy.bodies.db.close_old_connections"):
        body_iter = application(environ, start_response)
        try:
            data = b"".join(body_iter)
        finally:
            if hasattr(body_iter, "close"):  # a one-piece answer is a list, accounted already
                body_iter.close()
    return Answer(captured["status"], captured["headers"], data)


@pytest.fixture
def call():
    """``call(path, body=None, headers={}, method="POST")`` through ``proxy.wsgi`` in this process."""

    def _call(path: str, body=None, headers: dict[str, str] | None = None, method: str = "POST") -> Answer:
        raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
        return send(path, raw, headers, method)

    return _call


@dataclass
class Setup:
    vk: object
    value: str
    openai: object
    anthropic: object
    openai_key: object
    anthropic_key: object


def make_setup(mock_url: str, **vk_options) -> Setup:
    """Providers ``openai`` and ``anthropic`` on the mock, one key each, and a VK allowed both."""
    openai = provider_create(name="openai", base_url=mock_url, timeout_seconds=2.0)
    anthropic = provider_create(name="anthropic", base_url=mock_url, timeout_seconds=2.0)
    openai_key = provider_key_create(provider=openai, name="main", value="sk-upstream-openai-secret")
    anthropic_key = provider_key_create(provider=anthropic, name="main", value="sk-ant-upstream-secret")
    configs = vk_options.pop(
        "provider_configs",
        [
            {"provider": "openai", "weight": 1.0, "allowed_models": ["*"], "key_ids": ["*"]},
            {"provider": "anthropic", "weight": None, "allowed_models": ["*"], "key_ids": ["*"]},
        ],
    )
    vk, value = virtual_key_create(name=vk_options.pop("name", "app"), provider_configs=configs, **vk_options)
    return Setup(vk, value, openai, anthropic, openai_key, anthropic_key)


@pytest.fixture
def setup(mock) -> Setup:
    return make_setup(mock.url)


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05):
    """Poll until ``predicate()`` is truthy (the gateway writes usage rows off the request path)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
