"""One session with an upstream MCP server, owned by one task on the upstream event loop.

The SDK's transports and ``ClientSession`` are async context managers whose task groups and cancel
scopes must be entered and exited by the same task. ``Connection._own`` is that task: it enters the
transport and the session, does the handshake (``initialize``, or ``server/discover`` for a server
that speaks only the 2026 protocol), sets ``ready`` and then waits for ``close()``. Requests are
sent from other tasks on the same loop straight through the session: its dispatcher correlates
responses by request id, so concurrent calls share the session without a queue.
"""

from __future__ import annotations

import asyncio
import http
import logging
import sys
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any, TextIO

import httpx2
import mcp_types as types
from mcp.client import Transport
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, ValidationError

from mcp_gateway.upstream import fast
from mcp_gateway.upstream.errors import ToolTimeout, UpstreamError, scrub, seconds, timeout_message
from mcp_gateway.upstream.spec import ClientSpec, child_environment

logger = logging.getLogger(__name__)
# httpx2 logs every request with its full URL at INFO (an upstream URL's query may hold a token),
# and the SDK's streamable HTTP client logs each session id it receives: warnings only.
logging.getLogger("httpx2").setLevel(logging.WARNING)
logging.getLogger("mcp.client.streamable_http").setLevel(logging.WARNING)

CLIENT_INFO = types.Implementation(name="bifrost-mcp-gateway", version="1.0")
# Connecting a TCP socket to an HTTP upstream: a closed port fails at once, a black hole after this.
CONNECT_TIMEOUT_SECONDS = 5.0
# The handshake (spawn or connect, then initialize) gets the client's timeout, but at least this:
# a stdio server importing its packages takes a second or more to answer.
HANDSHAKE_MIN_SECONDS = 10.0
# How long a server-sent event stream may stay silent (the SDK's default).
SSE_READ_TIMEOUT_SECONDS = 300.0
MAX_TOOL_PAGES = 100


class _RawResult(BaseModel):
    """A result kept exactly as the server sent it (every member an extra, nothing parsed)."""

    model_config = ConfigDict(extra="allow")

    def raw(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})


_STATUS_FALLBACK = "Server returned an error response"
_SESSION_GONE = "Session terminated"
_SESSION_HEADER = "mcp-session-id"


def handshake_timeout(spec: ClientSpec) -> float:
    return max(spec.timeout_seconds, HANDSHAKE_MIN_SECONDS)


def _errlog() -> TextIO:
    """Where a stdio server's stderr goes: ours, when it is a real file (not a test capture)."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (AttributeError, OSError, ValueError):
            continue
    return open("/dev/null", "w")  # kept open for the process


def _leaf(exc: BaseException) -> BaseException:
    """The first meaningful exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or list(exc.exceptions))[0]
    return exc


class Connection:
    """A session with one upstream, live between ``open()`` and ``close()``."""

    def __init__(self, spec: ClientSpec, extra_headers: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.headers = {**spec.headers, **(extra_headers or {})}
        self.session: ClientSession | None = None
        self.failure: BaseException | None = None
        self.http_status: int | None = None
        # The server answered 404 to a request carrying our Mcp-Session-Id: it forgot the session
        # (it restarted, or expired it), which no request on this session can recover from.
        self.session_lost = False
        # The Mcp-Session-Id the server gave in its answer to ``initialize`` (as the SDK reads it),
        # and the fast path of ``tools/call`` (``fast.py``) once the session is up.
        self.session_id: str | None = None
        self._session_id_read = False
        self._client: httpx2.AsyncClient | None = None
        self.fast: fast.Target | None = None
        self.ready = asyncio.Event()
        self.finished = asyncio.Event()
        self.last_used = time.monotonic()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and do the handshake, within ``handshake_timeout``; ``UpstreamError`` if it fails."""
        self._task = asyncio.get_running_loop().create_task(self._own(), name=f"mcp-upstream:{self.spec.name}")
        timeout = handshake_timeout(self.spec)
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=10)
            raise UpstreamError(self.message(f"did not complete the MCP handshake within {seconds(timeout)}"))
        except asyncio.CancelledError:
            self._task.cancel()
            raise
        if self.session is None:
            raise UpstreamError(self.message(self.describe(self.failure)))

    async def _own(self) -> None:
        try:
            async with AsyncExitStack() as stack:
                read_stream, write_stream = await stack.enter_async_context(self._transport(stack))
                session = await stack.enter_async_context(
                    ClientSession(
                        read_stream,
                        write_stream,
                        read_timeout_seconds=handshake_timeout(self.spec),
                        client_info=CLIENT_INFO,
                    )
                )
                try:
                    await session.initialize()
                except MCPError as error:
                    if error.code != types.UNSUPPORTED_PROTOCOL_VERSION:
                        raise
                    await session.discover()  # a server that speaks only the 2026 protocol
                if self._client is not None:
                    self.fast = fast.target_for(self, session.protocol_version, self.session_id, self._client)
                self.session = session
                self.ready.set()
                await self._stop.wait()
                self.session = None
        except BaseException as exc:  # the owner task records every ending
            if not self._stop.is_set() and self.failure is None:
                self.failure = exc
            if not isinstance(_leaf(exc), asyncio.CancelledError | MCPError | httpx2.HTTPError | OSError):
                logger.debug("MCP upstream %s: the connection ended", self.spec.name, exc_info=True)
        finally:
            self.session = None
            self.finished.set()
            self.ready.set()

    def _transport(self, stack: AsyncExitStack) -> Transport:
        spec = self.spec
        if spec.connection_type == "stdio":
            parameters = StdioServerParameters(command=spec.command, args=list(spec.args), env=child_environment(spec))
            return stdio_client(parameters, errlog=_errlog())
        if spec.connection_type == "sse":
            return sse_client(
                spec.url,
                headers=self.headers,
                timeout=CONNECT_TIMEOUT_SECONDS,
                sse_read_timeout=SSE_READ_TIMEOUT_SECONDS,
                httpx_client_factory=self._http_client,
            )
        # The transport leaves a client it was given open: closed last, after the session's DELETE.
        client = self._http_client(headers=self.headers)
        self._client = client
        stack.push_async_callback(client.aclose)
        return streamable_http_client(spec.url, http_client=client)

    def _http_client(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        """An HTTP client with a short connect timeout that remembers the last error status it saw."""
        return httpx2.AsyncClient(
            headers=headers,
            timeout=timeout or httpx2.Timeout(30.0, connect=CONNECT_TIMEOUT_SECONDS, read=SSE_READ_TIMEOUT_SECONDS),
            auth=auth,
            event_hooks={"response": [self._on_response]},
        )

    async def _on_response(self, response: httpx2.Response) -> None:
        if not self._session_id_read and response.request.method == "POST" and 200 <= response.status_code < 300:
            # The first POST is ``initialize``: the SDK takes the session id from its answer only.
            self._session_id_read = True
            if response.status_code != 202:
                self.session_id = response.headers.get(_SESSION_HEADER) or None
        if response.status_code >= 400:
            self.http_status = response.status_code
            if response.status_code == 404 and _SESSION_HEADER in response.request.headers:
                self.session_lost = True

    async def close(self, wait: float = 10.0) -> None:
        """End the session (stdio: stop the server; HTTP: DELETE the session) and wait for the owner."""
        self._stop.set()
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=wait)

    @property
    def alive(self) -> bool:
        """A session is up and its transport has not reported the end of the stream."""
        session = self.session
        if session is None or self.finished.is_set() or self.session_lost:
            return False
        # Best effort: the dispatcher knows when the server's stream ended (a stdio server exited).
        dispatcher = getattr(session, "_dispatcher", None)
        return not getattr(dispatcher, "_closed", False)

    def _live(self, *, use: bool = True) -> ClientSession:
        session = self.session
        if session is None:
            raise MCPError(code=types.CONNECTION_CLOSED, message="Connection closed")
        if use:
            self.last_used = time.monotonic()
        return session

    # --- requests ---------------------------------------------------------------------------

    async def list_tools(self) -> list[dict[str, Any]]:
        """Every page of ``tools/list``, as plain ``Tool`` dicts."""
        session = self._live()
        listed: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            listed += [tool.model_dump(by_alias=True, exclude_none=True, mode="json") for tool in page.tools]
            cursor = page.next_cursor
            if not cursor:
                break
        return listed

    async def call_tool(self, name: str, arguments: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        """``tools/call``: the server's result as it sent it (content blocks untouched)."""
        session = self._live()
        request = types.CallToolRequest(params=types.CallToolRequestParams(name=name, arguments=arguments))
        try:
            answer = await session.send_request(request, _RawResult, request_read_timeout_seconds=timeout)
        except MCPError as error:
            if error.code != types.HEADER_MISMATCH or session.protocol_version not in MODERN_PROTOCOL_VERSIONS:
                raise
            # 2026 protocol: the server wants the tool listed first (Mcp-Param headers); list, resend once.
            await self.list_tools()
            answer = await session.send_request(request, _RawResult, request_read_timeout_seconds=timeout)
        result = answer.raw()
        if result.get("resultType") == "input_required":
            raise MCPError(code=types.INVALID_REQUEST, message="the tool asked for user input, which is not supported")
        result.setdefault("content", [])
        result.setdefault("isError", False)
        return result

    async def ping(self, timeout: float) -> None:
        """``ping`` (``server/discover`` on a 2026-protocol session, which has no ping)."""
        session = self._live(use=False)  # a ping is not a use: the idle clock keeps running
        version = session.protocol_version
        if version in MODERN_PROTOCOL_VERSIONS:
            assert version is not None
            await asyncio.wait_for(session.send_discover(version), timeout)
        else:
            await session.send_request(
                types.PingRequest(params=types.RequestParams()), types.EmptyResult, request_read_timeout_seconds=timeout
            )

    # --- errors -------------------------------------------------------------------------------

    def resendable(self, error: BaseException) -> bool:
        """The request provably did not reach a live session, so sending it again on a new session
        cannot run the tool twice: the server answered 404 for our session id (it restarted or
        expired the session), or the session ended because its server could not be connected to."""
        if isinstance(error, MCPError):
            if self._session_gone(error):
                return True
            if error.code == types.CONNECTION_CLOSED and self.failure is not None:
                return isinstance(_leaf(self.failure), httpx2.ConnectError)
        return False

    def broken_by(self, error: BaseException) -> bool:
        """The error says the session itself is unusable (not just this request)."""
        if isinstance(error, MCPError):
            return error.code == types.CONNECTION_CLOSED or self._session_gone(error)
        # An invalid answer or a refused result shape is about that request; anything else is not.
        return not isinstance(error, ValidationError | RuntimeError)

    def _session_gone(self, error: MCPError) -> bool:
        """HTTP 404 for our session id: the SDK's stand-in error, or the server's own JSON-RPC one."""
        return error.code == types.INVALID_REQUEST and (error.message == _SESSION_GONE or self.session_lost)

    def call_error(self, spec: ClientSpec, name: str, error: BaseException) -> UpstreamError:
        """The caller's error for a ``tools/call`` that failed with ``error``."""
        if isinstance(error, MCPError) and error.code == types.REQUEST_TIMEOUT:
            return ToolTimeout(timeout_message(spec, name))
        return UpstreamError(self.message(f"tools/call '{name}' failed: {self.describe(error)}"))

    def describe(self, error: BaseException | None) -> str:
        """Why it failed, in words, without a secret."""
        if error is None:
            exited = " (its process exited)" if self.spec.connection_type == "stdio" else ""
            return f"the server closed the connection{exited}"
        exc = _leaf(error)
        spec = self.spec
        if isinstance(exc, httpx2.HTTPStatusError):
            reason = self._status(exc.response.status_code)
        elif isinstance(exc, httpx2.ConnectTimeout):
            reason = f"cannot connect to {spec.target}: no answer within {seconds(CONNECT_TIMEOUT_SECONDS)}"
        elif isinstance(exc, httpx2.ConnectError):
            reason = f"cannot connect to {spec.target}: {str(exc) or 'connection failed'}"
        elif isinstance(exc, httpx2.TimeoutException):
            reason = f"{spec.target} timed out ({type(exc).__name__})"
        elif isinstance(exc, httpx2.HTTPError):
            reason = f"HTTP error talking to {spec.target}: {type(exc).__name__}: {exc}"
        elif isinstance(exc, FileNotFoundError):
            reason = f"cannot start {spec.command!r}: command not found"
        elif isinstance(exc, PermissionError):
            reason = f"cannot start {spec.command!r}: permission denied"
        elif isinstance(exc, MCPError):
            if exc.message == _STATUS_FALLBACK and self.http_status is not None:
                reason = self._status(self.http_status)
            elif self._session_gone(exc):
                reason = "the server no longer knows the session (HTTP 404)"
            elif exc.code == types.CONNECTION_CLOSED:
                cause = self.failure
                if cause is not None and _leaf(cause) is not exc:
                    return self.describe(cause)
                return self.describe(None)
            else:
                reason = f"MCP error {exc.code}: {exc.message}"
        elif isinstance(exc, ValidationError):
            problems = exc.errors(include_url=False, include_context=False, include_input=False)
            where = ".".join(str(part) for part in problems[0]["loc"]) if problems else ""
            what = problems[0]["msg"] if problems else "invalid"
            reason = f"the server's answer is not valid MCP ({where or 'result'}: {what})"
        elif isinstance(exc, asyncio.CancelledError):
            reason = "the connection was cancelled"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        return scrub(reason, spec.secrets())

    @staticmethod
    def _status(code: int) -> str:
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = ""
        return f"HTTP {code} {phrase}".rstrip()

    def message(self, reason: str) -> str:
        return f"MCP client '{self.spec.name}': {reason}"
