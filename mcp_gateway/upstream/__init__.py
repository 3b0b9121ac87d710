"""Connections to upstream MCP servers: the official ``mcp`` SDK as the client (stdio, streamable
HTTP, SSE), one event loop thread per process, one long-lived session per client, tool lists cached.

The interface (synchronous, safe to call from any number of threads; see ``mcp_gateway``):

- ``spec_of(client) -> ClientSpec``; ``ClientSpec`` is what a connection needs (frozen; secrets out
  of its ``repr``); its ``fingerprint`` changes with the configuration, which makes the next use
  reconnect.
- ``tools(spec, *, refresh=False) -> list[dict]``: the upstream's ``Tool`` dicts, every page,
  cached ``MCP_TOOLS_REFRESH_SECONDS`` (a fresh copy for each caller).
- ``call_tool(spec, name, arguments, *, headers=None, bearer=None) -> dict``: the upstream's
  ``CallToolResult`` as it sent it (``content``, ``isError``, ``structuredContent``...). Extra
  ``headers`` or a ``bearer`` token use a short-lived session of their own (HTTP and SSE; a
  stdio server has no headers, so they are ignored there). A session the server forgot (404 for
  its ``Mcp-Session-Id``) or a stdio server that exited is reopened on the next call; a call that
  provably never reached the server (404, connection refused) is sent again once. On a live
  streamable-HTTP session, a call without headers of its own skips the SDK (``fast``).
- ``state(spec)``: ``connected``, ``pending_tools``, ``error`` or ``disconnected``;
  ``last_error(spec)``; ``reconnect(spec)``; ``forget(client_id)``; ``health_check()``.
- ``UpstreamError`` (the message says why, never a secret) and its subclass ``ToolTimeout``.

Layout: ``spec`` (ClientSpec, ``env.NAME``, the stdio child's environment), ``connection`` (one
session owned by one task on the loop), ``runner`` (the loop thread, the registry, health pings),
``fast`` (``tools/call`` on a live streamable-HTTP session from the caller's thread, over pooled
keep-alive connections, falling back to the SDK for anything it does not expect).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from mcp_gateway.upstream import fast
from mcp_gateway.upstream import runner as _runner_module
from mcp_gateway.upstream.connection import Connection, handshake_timeout
from mcp_gateway.upstream.errors import ToolTimeout, UpstreamError
from mcp_gateway.upstream.runner import SYNC_MARGIN_SECONDS, existing_runner, get_runner, refresh_seconds
from mcp_gateway.upstream.spec import ClientSpec, child_environment, spec_of

__all__ = [
    "ClientSpec",
    "ToolTimeout",
    "UpstreamError",
    "call_tool",
    "child_environment",
    "forget",
    "health_check",
    "last_error",
    "reconnect",
    "spec_of",
    "state",
    "tools",
]


def _budget(spec: ClientSpec, attempts: int = 2) -> float:
    """How long a synchronous caller waits: the loop enforces the real timeouts within this."""
    return attempts * (handshake_timeout(spec) + spec.timeout_seconds) + SYNC_MARGIN_SECONDS


def tools(spec: ClientSpec, *, refresh: bool = False) -> list[dict[str, Any]]:
    """The upstream's tools as MCP ``Tool`` dicts (unfiltered, unprefixed)."""
    loop = get_runner()
    if not refresh:
        upstream = loop.peek(spec.client_id)
        if upstream is not None and (cached := upstream.cached_tools(spec, refresh_seconds())) is not None:
            return cached
    return loop.run(loop.list_tools(spec), _budget(spec), f"MCP client '{spec.name}'")


def call_tool(
    spec: ClientSpec,
    name: str,
    arguments: dict[str, Any] | None,
    *,
    headers: Mapping[str, str] | None = None,
    bearer: str | None = None,
) -> dict[str, Any]:
    """Call a tool; ``ToolTimeout`` after ``spec.timeout_seconds``, ``UpstreamError`` if it failed."""
    extra = _merge_headers(headers or {}, {"Authorization": f"Bearer {bearer}"} if bearer else {})
    failed: tuple[Connection, BaseException] | None = None
    if not extra and spec.connection_type == "http" and (conn := _fast_session(spec)) is not None:
        try:
            return fast.call_tool(conn, spec, name, arguments)
        except fast.Fallback:
            pass  # this call goes the SDK way
        except fast.Failed as error:
            failed = (conn, error.error)
    loop = get_runner()
    what = f"tool '{name}' on MCP client '{spec.name}'"
    return loop.run(loop.call_tool(spec, name, arguments, extra, failed), _budget(spec), what, ToolTimeout)


def _fast_session(spec: ClientSpec) -> Connection | None:
    """The client's live session, if its calls may take the fast path (``fast.py``)."""
    loop = existing_runner()
    upstream = loop.peek(spec.client_id) if loop is not None else None
    conn = upstream.conn if upstream is not None else None
    if conn is None or (target := conn.fast) is None or target.disabled or target.cookies:
        return None
    if target.paused_until and time.monotonic() < target.paused_until:
        return None
    return conn if conn.spec.fingerprint == spec.fingerprint and conn.alive else None


def _merge_headers(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``base`` then ``extra``, names compared case-insensitively (one ``Authorization``, not two)."""
    override = {name.lower() for name in extra}
    return {**{k: v for k, v in base.items() if k.lower() not in override}, **extra}


def state(spec: ClientSpec) -> str:
    """``connected`` (a live session with its tool list), ``pending_tools`` (a live session, tools not
    listed yet), ``error`` (the last attempt failed, see ``last_error``) or ``disconnected``."""
    loop = existing_runner()
    upstream = loop.peek(spec.client_id) if loop is not None else None
    return upstream.state(spec) if upstream is not None else "disconnected"


def last_error(spec: ClientSpec) -> str | None:
    """Why the last attempt failed (``None`` if it did not)."""
    loop = existing_runner()
    upstream = loop.peek(spec.client_id) if loop is not None else None
    return upstream.error(spec) if upstream is not None else None


def reconnect(spec: ClientSpec) -> None:
    """Close the session, open a new one and list its tools again; ``UpstreamError`` if that fails."""
    loop = get_runner()
    loop.run(loop.reconnect(spec), _budget(spec, attempts=3), f"MCP client '{spec.name}'")


def forget(client_id: str) -> None:
    """Close the client's session and drop its tool list and state (the client was deleted)."""
    loop = existing_runner()
    if loop is not None and loop.peek(client_id) is not None:
        loop.run(loop.close(client_id, forget=True), 30.0, "closing an MCP session")


def health_check(idle_seconds: float | None = None) -> None:
    """Ping now every session idle for ``idle_seconds`` (default: the ping interval); the loop does
    this by itself every ``PING_INTERVAL_SECONDS``."""
    loop = existing_runner()
    if loop is not None:
        idle = _runner_module.PING_INTERVAL_SECONDS if idle_seconds is None else idle_seconds
        loop.run(loop.ping_idle(idle), _runner_module.PING_TIMEOUT_SECONDS + SYNC_MARGIN_SECONDS, "health check")
