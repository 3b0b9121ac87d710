"""Upstream MCP servers for the gateway tests, and McpClient rows pointing at them.

- ``McpHttpServer``: ``tests/mcp/servers/http_server.py`` in a subprocess on a free port
  (``start``/``stop``/``restart`` on the same port); ``mcp_http_server`` (session-scoped, with
  ``--many --page-size 10``: 27 tools over 3 pages), ``mcp_auth_server`` (``--require-header``),
  ``mcp_sse_server`` (the legacy SSE transport); ``restartable_http_server`` is the test's own.
- ``make_mcp_client(**fields)``: saves an ``McpClient`` (``headers=`` encrypted with
  ``set_headers``); every client made is ``forget``-ed after the test, so no session or stdio
  process outlives it.
- ``TIME_STDIO`` / ``ENV_STDIO``: ``stdio_config`` of ``mcp-server-time`` (``--local-timezone UTC``,
  no network needed) and of ``tests/mcp/servers/env_server.py`` (answers its own environment).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from governance.models import McpClient
from mcp_gateway import upstream

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
AUTH_HEADER = ("X-Api-Key", "sekret-api-key-123")

TIME_STDIO: dict[str, Any] = {
    "command": sys.executable,
    "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"],
    "envs": {},
}
ENV_STDIO: dict[str, Any] = {
    "command": sys.executable,
    "args": [str(REPO / "tests" / "mcp" / "servers" / "env_server.py")],
    "envs": {},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A test server module (``python -m <module> --port N ...``) in a subprocess."""

    module = ""
    label = "test server"

    def __init__(self, *args: str) -> None:
        self.args = list(args)
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        command = [sys.executable, "-m", self.module, "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.label} exited with {self.proc.returncode}")
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the {self.label} did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class McpHttpServer(ServerProcess):
    """The test MCP server in a subprocess; ``url`` stays the same across restarts."""

    module = "tests.mcp.servers.http_server"
    label = "MCP test server"

    def __init__(self, *args: str, sse: bool = False) -> None:
        super().__init__(*args, *(["--sse"] if sse else []))
        self.url = f"{self.base}/sse" if sse else f"{self.base}/mcp"

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def mcp_http_server() -> Iterator[McpHttpServer]:
    server = McpHttpServer("--many", "--page-size", "10")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mcp_auth_server() -> Iterator[McpHttpServer]:
    server = McpHttpServer("--require-header", "=".join(AUTH_HEADER))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mcp_sse_server() -> Iterator[McpHttpServer]:
    server = McpHttpServer(sse=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def restartable_http_server() -> Iterator[McpHttpServer]:
    server = McpHttpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_mcp_client(db: None) -> Iterator[Callable[..., McpClient]]:
    made: list[McpClient] = []
    counter = iter(range(1, 10_000))

    def make(*, headers: dict[str, str] | None = None, **fields: Any) -> McpClient:
        fields.setdefault("name", f"upstream{next(counter)}")
        fields.setdefault("timeout_seconds", 10.0)
        client = McpClient(**fields)
        client.set_headers(headers or {})
        client.save()
        made.append(client)
        return client

    yield make
    for client in made:
        upstream.forget(client.client_id)


@pytest.fixture
def http_client(make_mcp_client: Callable[..., McpClient], mcp_http_server: McpHttpServer) -> McpClient:
    return make_mcp_client(name="tester", connection_type="http", connection_string=mcp_http_server.url)


@pytest.fixture
def time_client(make_mcp_client: Callable[..., McpClient]) -> McpClient:
    return make_mcp_client(name="time", connection_type="stdio", stdio_config=TIME_STDIO)


def stdio_children(marker: str) -> list[int]:
    """Ids of this process's child processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        status, parent = stat.rpartition(")")[2].split()[:2]
        if status != "Z" and int(parent) == os.getpid() and marker in cmdline:
            found.append(int(entry.name))
    return found
