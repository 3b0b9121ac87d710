"""The upstream event loop: one daemon thread per process, and the sessions it holds per client.

Everything that touches a session runs on this loop; the synchronous API (``__init__``) submits
coroutines with ``asyncio.run_coroutine_threadsafe`` and waits on the future with a timeout. The
registry (``_Upstream`` per client id) is written only by the loop thread; other threads read it
for ``state()`` and for cached tool lists, which are replaced, never mutated.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

import mcp_types as types
from mcp.shared.exceptions import MCPError

from mcp_gateway.upstream.connection import Connection
from mcp_gateway.upstream.errors import UpstreamError, seconds
from mcp_gateway.upstream.spec import ClientSpec

logger = logging.getLogger(__name__)

T = TypeVar("T")

# An idle session (no request for this long) is pinged; a failed ping marks it ``error`` and the
# next use reconnects. Read at every round, so tests may change it.
PING_INTERVAL_SECONDS = 30.0
PING_TIMEOUT_SECONDS = 10.0
# Beyond the loop-side timeouts, how long a synchronous caller waits before giving up itself.
SYNC_MARGIN_SECONDS = 5.0
# After a "connection closed", how long to wait for the session's owner to record why.
_FAILURE_SETTLE_SECONDS = 1.0


def refresh_seconds() -> float:
    from django.conf import settings

    return float(settings.MCP_TOOLS_REFRESH_SECONDS)


class _Upstream:
    """What the process knows about one client: its session, its tool list, its last error."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.conn: Connection | None = None
        self.connecting: asyncio.Task[Connection] | None = None
        self.connecting_fingerprint = ""
        # A tool list is stored as JSON text and parsed for each caller: a fresh copy every time.
        self.tools_json: str | None = None
        self.tools_at = 0.0
        self.tools_fingerprint = ""
        self.last_error: str | None = None
        self.error_fingerprint = ""

    def cached_tools(self, spec: ClientSpec, max_age: float) -> list[dict[str, Any]] | None:
        listing, at, fingerprint = self.tools_json, self.tools_at, self.tools_fingerprint
        if listing is None or fingerprint != spec.fingerprint or time.monotonic() - at >= max_age:
            return None
        tools: list[dict[str, Any]] = json.loads(listing)
        return tools

    def state(self, spec: ClientSpec) -> str:
        conn = self.conn
        if conn is not None and conn.spec.fingerprint == spec.fingerprint:
            if not conn.alive:
                return "error"
            listed = self.tools_json is not None and self.tools_fingerprint == spec.fingerprint
            return "connected" if listed else "pending_tools"
        if self.last_error is not None and self.error_fingerprint == spec.fingerprint:
            return "error"
        return "disconnected"

    def error(self, spec: ClientSpec) -> str | None:
        conn = self.conn
        if conn is not None and conn.spec.fingerprint == spec.fingerprint and not conn.alive:
            return conn.message(conn.describe(conn.failure))
        if self.error_fingerprint == spec.fingerprint:
            return self.last_error
        return None


class Runner:
    """The loop thread of this process and the upstreams it serves."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.upstreams: dict[str, _Upstream] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.thread = threading.Thread(target=self._main, name="mcp-upstream-loop", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._health = self.loop.create_task(self._health_loop(), name="mcp-upstream-health")
        self.loop.run_forever()

    # --- the synchronous bridge ---------------------------------------------------------------

    def run(
        self,
        coroutine: Coroutine[Any, Any, T],
        timeout: float,
        what: str,
        timeout_error: type[UpstreamError] = UpstreamError,
    ) -> T:
        if threading.current_thread() is self.thread:
            coroutine.close()
            raise RuntimeError("the MCP upstream API is synchronous: do not call it from its own event loop")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.CancelledError:
            raise UpstreamError(f"{what}: the request was cancelled") from None
        except concurrent.futures.TimeoutError:
            if future.done():
                raise
            future.cancel()
            raise timeout_error(f"{what} did not answer within {seconds(timeout)}") from None

    def peek(self, client_id: str) -> _Upstream | None:
        return self.upstreams.get(client_id)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background on the loop (from the loop thread)."""
        task = self.loop.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- sessions (loop thread) ---------------------------------------------------------------

    def _upstream(self, client_id: str) -> _Upstream:
        upstream = self.upstreams.get(client_id)
        if upstream is None:
            upstream = self.upstreams[client_id] = _Upstream(client_id)
        return upstream

    def _drop(self, upstream: _Upstream, conn: Connection, reason: str | None = None) -> None:
        """Forget a session (closing it in the background); ``reason`` marks the client ``error``."""
        if upstream.conn is conn:
            upstream.conn = None
        if reason is not None:
            upstream.last_error = conn.message(reason)
            upstream.error_fingerprint = conn.spec.fingerprint
        self.spawn(conn.close())

    async def connection(self, spec: ClientSpec) -> Connection:
        """The live session of this client, opened (or reopened) if needed; ``UpstreamError`` if not."""
        upstream = self._upstream(spec.client_id)
        conn = upstream.conn
        if conn is not None:
            if conn.spec.fingerprint == spec.fingerprint and conn.alive:
                return conn
            if conn.spec.fingerprint == spec.fingerprint:
                self._drop(upstream, conn, conn.describe(conn.failure))
            else:
                self._drop(upstream, conn)
        task = upstream.connecting
        if task is None or upstream.connecting_fingerprint != spec.fingerprint:
            task = self.loop.create_task(self._connect(upstream, spec))
            task.add_done_callback(_retrieve)
            upstream.connecting, upstream.connecting_fingerprint = task, spec.fingerprint
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                # Not this caller's cancellation: the client was reconnected or removed meanwhile.
                raise UpstreamError(f"MCP client '{spec.name}': the connection attempt was abandoned") from None
            raise

    async def _connect(self, upstream: _Upstream, spec: ClientSpec) -> Connection:
        conn = Connection(spec)
        try:
            await conn.open()
        except UpstreamError as error:
            upstream.last_error, upstream.error_fingerprint = str(error), spec.fingerprint
            raise
        finally:
            if upstream.connecting is asyncio.current_task():
                upstream.connecting = None
        current = upstream.conn
        if upstream.connecting is not None or (current is not None and current.spec.fingerprint != spec.fingerprint):
            # The configuration changed while this one connected: the newer one wins.
            self.spawn(conn.close())
            raise UpstreamError(conn.message("the configuration changed while connecting"))
        if current is not None:
            self._drop(upstream, current)
        if upstream.tools_fingerprint != spec.fingerprint:
            upstream.tools_json = None
        upstream.conn = conn
        upstream.last_error = None
        return conn

    async def close(self, client_id: str, *, forget: bool) -> None:
        upstream = self.upstreams.pop(client_id, None) if forget else self.upstreams.get(client_id)
        if upstream is None:
            return
        if upstream.connecting is not None:
            upstream.connecting.cancel()
            upstream.connecting = None
        conn, upstream.conn = upstream.conn, None
        if forget:
            upstream.tools_json = None
        if conn is not None:
            await conn.close()

    # --- operations (loop thread) -------------------------------------------------------------

    async def list_tools(self, spec: ClientSpec) -> list[dict[str, Any]]:
        upstream = self._upstream(spec.client_id)
        for attempt in range(2):
            conn = await self.connection(spec)
            try:
                listed = await asyncio.wait_for(conn.list_tools(), spec.timeout_seconds)
            except TimeoutError:
                raise UpstreamError(conn.message(f"tools/list did not answer within {seconds(spec.timeout_seconds)}"))
            except Exception as error:
                if await self._broken(upstream, conn, error) and attempt == 0 and conn.resendable(error):
                    continue
                raise UpstreamError(conn.message(f"tools/list failed: {conn.describe(error)}")) from None
            upstream.tools_json = json.dumps(listed)
            upstream.tools_at, upstream.tools_fingerprint = time.monotonic(), spec.fingerprint
            return listed
        raise AssertionError("unreachable")

    async def call_tool(
        self,
        spec: ClientSpec,
        name: str,
        arguments: dict[str, Any] | None,
        extra_headers: Mapping[str, str],
        failed: tuple[Connection, BaseException] | None = None,
    ) -> dict[str, Any]:
        """``failed``: the session and the error the fast path met on its first attempt (``fast.Failed``),
        handled as an error of this path's own first attempt."""
        if extra_headers and spec.connection_type != "stdio":
            return await self._call_alone(spec, name, arguments, extra_headers)
        upstream = self._upstream(spec.client_id)
        first = 0
        if failed is not None:
            await self._call_failed(upstream, *failed, spec, name, resend=True)
            first = 1
        for attempt in range(first, 2):
            conn = await self.connection(spec)
            try:
                return await conn.call_tool(name, arguments, spec.timeout_seconds)
            except Exception as error:
                await self._call_failed(upstream, conn, error, spec, name, resend=attempt == 0)
        raise AssertionError("unreachable")

    async def _call_failed(
        self, upstream: _Upstream, conn: Connection, error: BaseException, spec: ClientSpec, name: str, *, resend: bool
    ) -> None:
        """Returns if the call may be sent again on a new session, else raises the caller's error."""
        if not _timed_out(error) and await self._broken(upstream, conn, error) and resend and conn.resendable(error):
            reason = conn.describe(error)
            logger.info("MCP client %s: %s; tools/call sent again on a new session", spec.name, reason)
            return
        raise conn.call_error(spec, name, error) from None

    async def _call_alone(
        self, spec: ClientSpec, name: str, arguments: dict[str, Any] | None, extra_headers: Mapping[str, str]
    ) -> dict[str, Any]:
        """A call with its own headers (a user's bearer token...) on a session of its own."""
        conn = Connection(spec, extra_headers)
        try:
            await conn.open()
            return await conn.call_tool(name, arguments, spec.timeout_seconds)
        except UpstreamError:
            raise
        except Exception as error:
            raise conn.call_error(spec, name, error) from None
        finally:
            self.spawn(conn.close())

    async def _broken(self, upstream: _Upstream, conn: Connection, error: BaseException) -> bool:
        """If the error means the session is unusable, drop it (marking the client ``error``)."""
        if not conn.broken_by(error):
            return False
        if _closed(error) and conn.spec.connection_type != "stdio":
            # An HTTP transport that failed tears the session down: wait a moment for its reason.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.finished.wait(), _FAILURE_SETTLE_SECONDS)
        self._drop(upstream, conn, conn.describe(error))
        return True

    async def reconnect(self, spec: ClientSpec) -> None:
        await self.close(spec.client_id, forget=False)
        upstream = self._upstream(spec.client_id)
        upstream.tools_json = None
        await self.list_tools(spec)

    # --- health -------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_SECONDS)
            try:
                await self.ping_idle(PING_INTERVAL_SECONDS)
            except Exception:  # the health loop must survive anything
                logger.exception("MCP upstream health check failed")

    async def ping_idle(self, idle_seconds: float) -> None:
        """Ping every session idle for ``idle_seconds``; a dead one is dropped and marked ``error``."""
        now = time.monotonic()
        checks = [
            self._ping(upstream, conn)
            for upstream in list(self.upstreams.values())
            if (conn := upstream.conn) is not None and now - conn.last_used >= idle_seconds
        ]
        await asyncio.gather(*checks)

    async def _ping(self, upstream: _Upstream, conn: Connection) -> None:
        if not conn.alive:
            self._drop(upstream, conn, conn.describe(conn.failure))
            return
        try:
            await conn.ping(min(conn.spec.timeout_seconds, PING_TIMEOUT_SECONDS))
        except Exception as error:
            reason = "no answer" if isinstance(error, TimeoutError) or _timed_out(error) else conn.describe(error)
            self._drop(upstream, conn, f"ping failed: {reason}")


def _closed(error: BaseException) -> bool:
    """The dispatcher's own "connection closed" (its transport ended), not a transport's stand-in."""
    return isinstance(error, MCPError) and (error.code, error.message) == (types.CONNECTION_CLOSED, "Connection closed")


def _timed_out(error: BaseException) -> bool:
    return isinstance(error, MCPError) and error.code == types.REQUEST_TIMEOUT


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a shared task's exception retrieved (its awaiters may all have gone)."""
    if not task.cancelled():
        task.exception()


# --- the process's runner: started lazily, and again in a forked child --------------------------

_lock = threading.Lock()
_runner: Runner | None = None


def get_runner() -> Runner:
    global _runner
    current = _runner
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _runner is None or _runner.pid != os.getpid():
            _runner = Runner()
        return _runner


def existing_runner() -> Runner | None:
    """This process's runner if it has started (``state()`` does not start one)."""
    current = _runner
    return current if current is not None and current.pid == os.getpid() else None


def _after_fork_in_child() -> None:
    # The parent's loop thread does not exist here, and its lock may have been held at the fork.
    global _lock, _runner
    _lock = threading.Lock()
    _runner = None


os.register_at_fork(after_in_child=_after_fork_in_child)
