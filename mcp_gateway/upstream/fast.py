"""The fast path of ``tools/call`` on a streamable-HTTP session: the JSON-RPC request sent from the
caller's own thread over a pooled keep-alive HTTP/1.1 connection (``proxy.http1``).

Why: through the SDK a call costs about 2 ms of CPU (pydantic, anyio, httpx, its SSE parser) and a
new TCP connection each time, because the SDK closes an SSE answer as soon as the result arrived,
so the connection is never reused. Here a call is one POST on a kept-alive connection, parsed by
hand, with no hop through the event loop.

When: the client's long-lived SDK session is up and initialized at a pre-2026 protocol version (a
2026 session stamps its requests differently), the URL has no userinfo, httpx would use no proxy
for it, the server set no cookie, and the call has no headers of its own (``target_for`` and
``mcp_gateway.upstream._fast_session`` decide). The
request carries what the SDK would send: the configured headers, ``Mcp-Session-Id`` (read from the
server's answer to ``initialize``, exactly as the SDK reads it), ``MCP-Protocol-Version`` as
negotiated, the ``Accept``/``Content-Type`` of streamable HTTP; ids are ``gw-<n>`` strings, never
one of the SDK's integers.

The answer is ``application/json`` or ``text/event-stream``. On a stream, notifications are
ignored and a server request is answered as the SDK session would answer it (``ping`` with an
empty result, sampling / elicitation / roots declined, anything else "Method not found"); a
stream that ends before the answer is resumed with ``Last-Event-ID`` when the server numbered its
events. The result goes through the SDK's own checks (``validate_server_result``, the fields of a
later revision dropped), so what the caller gets is what the SDK path would give it:

- a JSON-RPC error → the same ``UpstreamError``/``ToolTimeout``; errors the SDK path would take as
  the end of the session (HTTP 404 for our session id, a connection lost mid-answer) go to the
  loop (``Failed``), which drops the session and, when the call provably never ran (404), sends it
  again once on a new session;
- no answer within the client's timeout → ``ToolTimeout`` (and ``notifications/cancelled``);
- anything unexpected (no connection, another HTTP status, a content type or an answer this parser
  does not read) → ``Fallback``: this call goes the SDK way, which meets the same answer and says
  what the SDK path says about it. A 200 answer that cannot be parsed came from a tool that may
  have run: sent again, it runs twice (as rare as a server answering garbage). After
  ``MAX_MISSES`` fallbacks in a row the session leaves the fast path for ``PAUSE_SECONDS``.

A connection returns to the pool only when its answer was read to the end. The SDK's server ends
an SSE answer a moment after its last event: such an answer is parked, and finished without
waiting when the pool is next used (one still unfinished after ``PARK_SECONDS`` is closed). Pools
are per origin and per process (emptied in a forked child); idle connections older than
``KEEPALIVE_SECONDS`` are not reused. Nothing here logs a header value or the URL's query.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import ssl
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2
import mcp_types as types
from mcp.client.session import _clamp_inbound_ttl, _later_revision_fields
from mcp.shared.exceptions import MCPError
from mcp_types.methods import validate_server_result
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from proxy import http1

if TYPE_CHECKING:
    from mcp_gateway.upstream.connection import Connection
    from mcp_gateway.upstream.spec import ClientSpec

logger = logging.getLogger(__name__)

POOL_SIZE = 32
# A kept-alive connection idle longer than this is not reused: servers close idle ones (gunicorn
# after 2 s, uvicorn after 5 s), and one closed just as a request goes out loses the request.
KEEPALIVE_SECONDS = 1.5
# An SSE answer whose end had not arrived with its result waits this long for the next use.
PARK_SECONDS = 1.0
# What draining a parked answer may read (more means a server still talking: closed instead).
MAX_DRAIN_BYTES = 64 * 1024
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_SSE_EVENT_BYTES = 1024 * 1024  # the SDK's DEFAULT_MAX_SSE_EVENT_SIZE
# Fallbacks in a row after which a session stops trying the fast path for a while.
MAX_MISSES = 3
PAUSE_SECONDS = 60.0
# Resuming an SSE answer the server ended early (the SDK's defaults).
RECONNECTION_DELAY_SECONDS = 1.0
MAX_RECONNECTION_ATTEMPTS = 2
# The courtesy ``notifications/cancelled`` after a timeout: best effort, briefly.
CANCEL_TIMEOUT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 5.0

# Headers the HTTP layer owns: a configured one of these means the SDK path.
_RESERVED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "trailer", "expect"}
)
_PRINTABLE = re.compile(r"[\x21-\x7e]*\Z")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}\Z")
# What httpx sends unless configured otherwise (it decodes gzip and deflate, as http1 does).
_DEFAULTS = {
    "accept-encoding": "gzip, deflate",
    "connection": "keep-alive",
    "user-agent": f"python-httpx2/{httpx2.__version__}",
}
# The SDK session's answers to server requests: it has no sampling, elicitation or roots callback.
_DECLINED = {
    "sampling/createMessage": "Sampling not supported",
    "elicitation/create": "Elicitation not supported",
    "roots/list": "List roots not supported",
}
_ids = itertools.count(1)


class Fallback(Exception):
    """Send this call the SDK way (nothing the caller could tell apart happened)."""


class Failed(Exception):
    """An error the SDK path would also have met, and which it takes as the end of its session
    (or which says the call never ran): the loop handles it as it would its own."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


# --- the pool -----------------------------------------------------------------------------------


class Pool(http1.Pool):
    """``http1.Pool`` with an idle limit per connection and SSE answers left to finish."""

    def __init__(self, scheme: str, host: str, port: int, maxsize: int) -> None:
        super().__init__(scheme, host, port, maxsize)
        self.stack: deque[tuple[http1.Connection, float]] = deque()
        self.parked: deque[tuple[http1.Response, Chunked, float]] = deque()
        self.connects = 0  # connections opened (tests and debugging)

    def take(self, connect_timeout: float) -> http1.Connection:
        if self.parked:
            self.settle_parked()
        now = time.monotonic()
        while True:
            try:
                conn, since = self.stack.pop()
            except IndexError:
                return self.connect(connect_timeout)
            if now - since < KEEPALIVE_SECONDS and conn.idle_and_open():
                conn.reused = True
                return conn
            conn.close()

    def connect(self, timeout: float) -> http1.Connection:
        self.connects += 1
        return super().connect(timeout)

    def give_back(self, conn: http1.Connection) -> None:
        if len(self.stack) < self.maxsize:
            self.stack.append((conn, time.monotonic()))
        else:
            conn.close()

    def park(self, response: http1.Response, body: Chunked) -> None:
        if len(self.parked) < self.maxsize:
            self.parked.append((response, body, time.monotonic()))
        else:
            response.close()

    def settle_parked(self) -> None:
        for _ in range(len(self.parked)):
            try:
                response, body, since = self.parked.popleft()
            except IndexError:
                return
            if not _finish(response, body):
                if time.monotonic() - since < PARK_SECONDS:
                    self.parked.append((response, body, since))
                else:
                    response.close()

    def clear(self) -> None:
        while self.stack:
            self.stack.pop()[0].close()
        while self.parked:
            self.parked.pop()[0].close()


_pools: dict[tuple[str, str, int], Pool] = {}


def pool_for(scheme: str, host: str, port: int) -> Pool:
    key = (scheme, host, port)
    pool = _pools.get(key)
    if pool is None:
        pool = _pools.setdefault(key, Pool(scheme, host, port, POOL_SIZE))
    return pool


def _forget_pools() -> None:
    # The parent's sockets must not be shared with a forked child (a gunicorn worker).
    _pools.clear()


os.register_at_fork(after_in_child=_forget_pools)


class Chunked:
    """A chunked answer without a content coding (what SSE answers are), read piece by piece, and
    able to say, instead of blocking, that its next bytes have not arrived: ``read(block=False)``.
    That is how an answer is finished after its result without waiting for the rest."""

    def __init__(self, response: http1.Response) -> None:
        assert response.conn is not None
        self.response = response
        self.conn = response.conn
        self.state = "size"  # then "data", "crlf" (after a chunk's data), "trailer", "done"
        self.left = 0

    @staticmethod
    def suits(response: http1.Response) -> bool:
        codings = response.header("transfer-encoding", "").split(",")
        encoding = response.header("content-encoding", "identity").strip().lower()
        return codings[-1].strip().lower() == "chunked" and encoding in ("identity", "")

    def pieces(self) -> Iterator[bytes]:
        """The body, blocking for each piece (``read`` may go on from where this one stopped)."""
        while piece := self.read():
            yield piece

    def read(self, block: bool = True) -> bytes | None:
        """The next piece of the body, b"" at its end, None if ``block`` is false and the next
        bytes have not arrived. ``http1.UpstreamError`` if the framing is broken or the connection
        closed, ``http1.ReadTimeout`` after the connection's timeout."""
        conn = self.conn
        while True:
            if self.state == "done":
                return b""
            if self.state == "data":
                if not block and not conn.buffered() and not _socket_readable(conn):
                    return None
                piece = conn.read_some(self.left)
                self.left -= len(piece)
                if not self.left:
                    self.state = "crlf"
                return piece
            if not block and conn.buf.find(b"\n", conn.pos) < 0:
                if not _socket_readable(conn):
                    return None
                conn.more("connection closed mid-body")
                continue
            line = conn.readline()
            if self.state == "crlf":
                if line:
                    raise http1.UpstreamError("chunk not followed by CRLF")
                self.state = "size"
            elif self.state == "size":
                size_line = line.split(b";", 1)[0].strip()
                if not _HEX.match(size_line):
                    raise http1.UpstreamError("invalid chunk size")
                self.left = int(size_line, 16)
                self.state = "data" if self.left else "trailer"
            elif not line:  # the empty line after the trailer fields
                self.state = "done"
                self.response.complete = True


def _socket_readable(conn: http1.Connection) -> bool:
    if isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
        return True
    return bool(conn.poller.poll(0))


def _finish(response: http1.Response, body: Chunked) -> bool:
    """Read the rest of an answer without waiting for it. True when done with it (the connection
    back in the pool, or closed), False when the rest has not arrived yet."""
    drained = 0
    while (conn := response.conn) is not None:
        conn.set_timeout(0.0)  # a read that would block is an error (a TLS record arriving in parts)
        try:
            piece = body.read(block=False)
        except (http1.UpstreamError, OSError):
            response.close()
            return True
        if piece is None:
            return False
        if not piece:
            response.release()
            return True
        drained += len(piece)
        if drained > MAX_DRAIN_BYTES:
            response.close()  # a server still talking after the answer
    return True


def _request(
    pool: Pool,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
    *,
    connect_timeout: float,
    read_timeout: float,
) -> http1.Response:
    """``http1.request`` without its debug line, which logs the path (a query may hold a token)."""
    head = http1.encode_head(method, path, pool.host_header, headers, len(body) if body is not None else None)
    message = head + body if body else head
    conn = pool.take(connect_timeout)
    conn.set_timeout(read_timeout)
    try:
        try:
            http1._send(conn, message, None)
        except http1.UpstreamError:
            if not conn.reused:
                raise
            # The server closed this idle connection as it was taken: it never read the request.
            conn.close()
            conn = pool.connect(connect_timeout)
            conn.set_timeout(read_timeout)
            http1._send(conn, message, None)
        return http1._read_head(pool, conn, head_only=False)
    except BaseException:
        conn.close()
        raise


# --- the target: what a session's fast calls need -----------------------------------------------


@dataclass
class Target:
    """A session's fast path: where requests go and the headers they carry (never logged)."""

    pool: Pool
    path: str = field(repr=False)  # the URL's query may hold a token
    url: str = field(repr=False)
    version: str
    headers: list[tuple[str, str]] = field(repr=False)
    cookies: CookieJar = field(repr=False)  # the SDK client's: once it holds a cookie, the SDK path
    misses: int = 0
    disabled: bool = False  # for good (a header http1 refuses)
    paused_until: float = 0.0  # after MAX_MISSES fallbacks in a row
    # Calls answered by the fast path, sent the SDK way instead, handed to the loop (``Failed``).
    answered: int = 0
    fallbacks: int = 0
    failed: int = 0


def target_for(
    conn: Connection, version: str | None, session_id: str | None, client: httpx2.AsyncClient
) -> Target | None:
    """The fast path of a freshly initialized session (``client``: the SDK transport's), or None
    when its calls must take the SDK path."""
    spec = conn.spec
    if spec.connection_type != "http" or version is None or version in MODERN_PROTOCOL_VERSIONS:
        return None
    if not _direct(client, spec.url):
        return None  # httpx goes through a proxy (HTTP_PROXY...)
    try:
        parts = urlsplit(spec.url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host or parts.username is not None or parts.password is not None:
        return None
    if not host.isascii():
        return None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not _PRINTABLE.match(target):
        return None
    merged: dict[str, tuple[str, str]] = {name: (name, value) for name, value in _DEFAULTS.items()}
    for name, value in conn.headers.items():
        if name.lower() in _RESERVED:
            return None
        merged[name.lower()] = (name, value)
    sdk = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    if session_id:
        sdk["mcp-session-id"] = session_id
    sdk["mcp-protocol-version"] = version
    for name, value in sdk.items():
        merged[name] = (name, value)
    headers = list(merged.values())
    try:
        http1.encode_head("POST", target, "x", headers, 0)  # a header that cannot be sent as is
    except ValueError:
        return None
    pool = pool_for(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))
    cookies = client.cookies.jar
    return Target(pool=pool, path=target, url=spec.url, version=version, headers=headers, cookies=cookies)


def _direct(client: httpx2.AsyncClient, url: str) -> bool:
    """httpx connects to ``url`` itself (no proxy from the environment applies)."""
    try:
        return client._transport_for_url(httpx2.URL(url)) is client._transport
    except Exception:  # httpx internals changed: no proxy variable at all, then
        return not urllib.request.getproxies_environment()


# --- the call -----------------------------------------------------------------------------------


def call_tool(conn: Connection, spec: ClientSpec, name: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
    """``tools/call`` on the session's fast path. Raises ``UpstreamError``/``ToolTimeout`` as the SDK
    path would, ``Failed`` for the loop to handle, ``Fallback`` to send the call the SDK way."""
    target = conn.fast
    assert target is not None
    try:
        result = _call(conn, target, spec, name, arguments)
    except Fallback as fallback:
        target.misses += 1
        target.fallbacks += 1
        logger.debug("MCP client %s: tools/call sent the SDK way (%s)", spec.name, fallback)
        if target.misses >= MAX_MISSES:
            target.misses = 0
            target.paused_until = time.monotonic() + PAUSE_SECONDS
            logger.info("MCP client %s: fast path paused for %gs (%s)", spec.name, PAUSE_SECONDS, fallback)
        raise
    except Failed:
        target.failed += 1
        raise
    target.misses = 0
    target.answered += 1
    return result


def _call(conn: Connection, target: Target, spec: ClientSpec, name: str, arguments: dict[str, Any] | None) -> Any:
    timeout = spec.timeout_seconds
    deadline = time.monotonic() + timeout
    request_id = f"gw-{next(_ids)}"
    params: dict[str, Any] = {"name": name}
    if arguments is not None:
        params["arguments"] = arguments
    try:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params},
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        ).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise Fallback(f"arguments not serializable: {type(exc).__name__}") from None
    conn.last_used = time.monotonic()
    try:
        try:
            response = _request(
                target.pool,
                "POST",
                target.path,
                target.headers,
                body,
                connect_timeout=min(CONNECT_TIMEOUT_SECONDS, timeout),
                read_timeout=timeout,
            )
        except http1.ConnectFailed as exc:
            raise Fallback(f"no connection: {exc}") from None
        except ValueError as exc:
            target.disabled = True
            raise Fallback(str(exc)) from None
        message = _answer(conn, target, response, request_id, deadline)
    except http1.ReadTimeout:
        _cancel(target, request_id, timeout)
        raise conn.call_error(spec, name, _timeout()) from None
    except http1.UpstreamError as exc:
        # Sent, and the connection broke before an answer: the SDK's session would end there too.
        raise Failed(MCPError(code=types.CONNECTION_CLOSED, message=f"the connection broke: {exc}")) from None
    return _result(conn, target, spec, name, message)


def _answer(
    conn: Connection, target: Target, response: http1.Response, request_id: str, deadline: float
) -> dict[str, Any]:
    """The JSON-RPC response to ``request_id`` (a dict with ``result`` or ``error``); the answer is
    read to its end (or parked, or closed)."""
    try:
        if response.header("set-cookie") is not None:
            _keep_cookies(target, response)
        status = response.status
        if status == 404 and conn.session_id:
            # The server forgot the session (it restarted or expired it): the tool did not run.
            conn.session_lost = True
            raise Failed(MCPError(code=types.INVALID_REQUEST, message="Session terminated"))
        if status != 200:
            raise Fallback(f"HTTP {status}")
        kind = response.header("content-type", "").partition(";")[0].strip().lower()
        if kind == "application/json":
            data = response.read(MAX_JSON_BYTES)
            response.release()
            message = _message(data)
            if not _is_response_to(message, request_id):
                raise Fallback("the JSON answer is not the response to the request")
            return message
        if kind != "text/event-stream":
            raise Fallback(f"unexpected content type {kind[:40]!r}")
    except BaseException:
        response.close()
        raise
    return _stream(target, response, request_id, deadline)


def _stream(target: Target, response: http1.Response, request_id: str, deadline: float) -> dict[str, Any]:
    parser = SseParser(MAX_SSE_EVENT_BYTES)
    attempts = 0
    while True:
        try:
            found = _read_events(target, response, parser, request_id, deadline)
        except SseError as exc:
            raise Failed(MCPError(code=types.CONNECTION_CLOSED, message=f"SSE stream failed: {exc}")) from None
        if found is not None:
            return found
        # The stream ended without the response: resumable if the server numbered its events.
        if not parser.last_id or attempts >= MAX_RECONNECTION_ATTEMPTS:
            reason = "SSE stream ended without a response"
            if parser.last_id:
                reason = "SSE stream ended and reconnection attempts were exhausted"
            raise Failed(MCPError(code=types.CONNECTION_CLOSED, message=reason))
        attempts += 1
        delay = parser.retry / 1000 if parser.retry is not None else RECONNECTION_DELAY_SECONDS
        if time.monotonic() + delay >= deadline:
            raise http1.ReadTimeout("no answer before the deadline")
        time.sleep(delay)
        response = _resume(target, parser.last_id, deadline)
        parser = SseParser(MAX_SSE_EVENT_BYTES, last_id=parser.last_id, retry=parser.retry)


def _read_events(
    target: Target, response: http1.Response, parser: SseParser, request_id: str, deadline: float
) -> dict[str, Any] | None:
    """Events until the response arrives (then the answer is finished or parked); None if the
    stream ends or breaks first (``ReadTimeout`` at the deadline). Closed unless it was answered."""
    chunked = Chunked(response) if Chunked.suits(response) else None
    pieces = chunked.pieces() if chunked is not None else response.stream()
    try:
        for piece in pieces:
            for kind, data in parser.feed(piece):
                if kind != "message" or not data:
                    continue  # another event type, or a priming event (an id, no data)
                message = _message(data)
                if "method" in message:
                    if "id" in message:
                        _reply(target, message)
                    continue  # a notification (progress, log...)
                if _is_response_to(message, request_id):
                    if chunked is None:
                        response.close()  # its end cannot be awaited without blocking
                    elif not _finish(response, chunked):
                        target.pool.park(response, chunked)
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise http1.ReadTimeout("no answer before the deadline")
            assert response.conn is not None
            response.conn.set_timeout(remaining)
    except http1.ReadTimeout:
        response.close()
        raise
    except http1.UpstreamError:
        pass  # the connection broke: as the SDK does, resume or give up
    except BaseException:
        response.close()
        raise
    # The stream ended (an unterminated last event is not dispatched: the SSE rules) or broke.
    response.close()
    return None


def _resume(target: Target, last_id: str, deadline: float) -> http1.Response:
    """GET the stream again from ``Last-Event-ID`` (as the SDK transport does)."""
    headers = [*target.headers, ("last-event-id", last_id)]
    remaining = max(deadline - time.monotonic(), 0.001)
    try:
        response = _request(
            target.pool,
            "GET",
            target.path,
            headers,
            None,
            connect_timeout=min(CONNECT_TIMEOUT_SECONDS, remaining),
            read_timeout=remaining,
        )
    except http1.ReadTimeout:
        raise
    except (http1.UpstreamError, ValueError) as exc:
        raise Failed(MCPError(code=types.CONNECTION_CLOSED, message=f"SSE stream failed: {exc}")) from None
    kind = response.header("content-type", "").partition(";")[0].strip().lower()
    if response.status != 200 or kind != "text/event-stream":
        response.close()
        reason = f"SSE stream failed: HTTP {response.status} resuming the stream"
        raise Failed(MCPError(code=types.CONNECTION_CLOSED, message=reason))
    return response


def _message(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except ValueError:
        raise Fallback("an answer that is not JSON") from None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise Fallback("an answer that is not a JSON-RPC message")
    return message


def _is_response_to(message: Mapping[str, Any], request_id: str) -> bool:
    if "result" in message:
        return message.get("id") == request_id
    if "error" in message:
        return message.get("id") in (request_id, None)  # null: the server could not read the id
    return False


def _result(conn: Connection, target: Target, spec: ClientSpec, name: str, message: Mapping[str, Any]) -> Any:
    """What the SDK path returns for this response (``Connection.call_tool``), or its error."""
    if "error" in message:
        error = message["error"]
        if not isinstance(error, dict) or not isinstance(error.get("code"), int) or isinstance(error["code"], bool):
            raise Fallback("a malformed JSON-RPC error")
        if not isinstance(error.get("message"), str):
            raise Fallback("a malformed JSON-RPC error")
        failure = MCPError(code=error["code"], message=error["message"], data=error.get("data"))
        if conn.broken_by(failure):
            raise Failed(failure)
        raise conn.call_error(spec, name, failure)
    result = message["result"]
    if not isinstance(result, dict):
        raise Fallback("a result that is not an object")
    # As ``ClientSession.send_request`` does, then ``Connection.call_tool``.
    _clamp_inbound_ttl(result)
    try:
        validate_server_result("tools/call", target.version, result)
    except KeyError:
        pass
    except ValidationError as exc:
        raise conn.call_error(spec, name, exc) from None
    if not (foreign := _later_revision_fields("tools/call", target.version)).isdisjoint(result):
        result = {key: value for key, value in result.items() if key not in foreign}
    if result.get("resultType") == "input_required":
        refused = MCPError(code=types.INVALID_REQUEST, message="the tool asked for user input, which is not supported")
        raise conn.call_error(spec, name, refused)
    result.setdefault("content", [])
    result.setdefault("isError", False)
    return result


def _timeout() -> MCPError:
    return MCPError(code=types.REQUEST_TIMEOUT, message="Request 'tools/call' timed out")


# --- messages to the server ---------------------------------------------------------------------


def _post(target: Target, payload: dict[str, Any], timeout: float) -> None:
    """POST a message that needs no answer (a response, a notification); failures are only logged."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    try:
        response = _request(
            target.pool, "POST", target.path, target.headers, body, connect_timeout=timeout, read_timeout=timeout
        )
        try:
            response.read(MAX_DRAIN_BYTES)
        finally:
            response.release()
    except (http1.UpstreamError, ValueError) as exc:
        logger.debug("MCP upstream: %s not delivered: %s", payload.get("method", "a response"), exc)


def _reply(target: Target, request: Mapping[str, Any]) -> None:
    """Answer a server request as the SDK session would (it has no callbacks)."""
    method = request.get("method")
    reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
    if method == "ping":
        reply["result"] = {}
    elif isinstance(method, str) and method in _DECLINED:
        reply["error"] = {"code": types.INVALID_REQUEST, "message": _DECLINED[method]}
    else:
        reply["error"] = {"code": types.METHOD_NOT_FOUND, "message": "Method not found", "data": method}
    _post(target, reply, CANCEL_TIMEOUT_SECONDS)


def _cancel(target: Target, request_id: str, timeout: float) -> None:
    """The SDK's courtesy ``notifications/cancelled`` for a request that timed out, sent from a
    thread of its own: a server too slow to answer it must not delay the caller's error."""
    params = {"requestId": request_id, "reason": f"timed out after {timeout}s"}
    message = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}
    threading.Thread(target=_post, args=(target, message, CANCEL_TIMEOUT_SECONDS), daemon=True).start()


def _keep_cookies(target: Target, response: http1.Response) -> None:
    """A cookie the server sets goes to the SDK client's jar (which then takes the calls over)."""
    try:
        answer = httpx2.Response(
            response.status,
            headers=[(name, value) for name, value in response.headers if name.lower() == "set-cookie"],
            request=httpx2.Request("POST", target.url),
        )
        httpx2.Cookies(target.cookies).extract_cookies(answer)
    except Exception:  # a cookie we cannot store must not fail the call
        logger.debug("MCP upstream: a cookie could not be stored", exc_info=True)


# --- server-sent events -------------------------------------------------------------------------


class SseError(Exception):
    """An event over the size limit."""


class SseParser:
    """Server-sent events from bytes (the WHATWG rules: CRLF, LF or CR ends a line; ``data``
    lines joined with LF; a blank line dispatches). ``feed`` returns ``(event type, data)``."""

    def __init__(self, max_event_size: int, *, last_id: str = "", retry: int | None = None) -> None:
        self.max_event_size = max_event_size
        self.last_id = last_id
        self.retry = retry
        self._line: list[bytes] = []  # the start of an unterminated line
        self._line_size = 0
        self._after_cr = False
        self._event = ""
        self._data: list[bytes] = []
        self._size = 0
        self._pending = False

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        if self._after_cr:
            self._after_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]  # the LF of a CRLF split between two reads
        if b"\r" in chunk:
            self._after_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            if chunk:
                self._line.append(chunk)
                self._line_size += len(chunk)
                self._check(self._line_size)
            return []
        lines = chunk.split(b"\n")
        if self._line:
            lines[0] = b"".join(self._line) + lines[0]
            self._line.clear()
        tail = lines.pop()
        events = []
        for line in lines:
            event = self._take(line)
            if event is not None:
                events.append(event)
        self._line_size = len(tail)
        if tail:
            self._line.append(tail)
            self._check(self._line_size)
        return events

    def flush(self) -> list[tuple[str, bytes]]:
        """At the end of the stream: a last line without its terminator is still a line."""
        events = []
        if self._line:
            event = self._take(b"".join(self._line))
            self._line.clear()
            if event is not None:
                events.append(event)
        return events

    def _take(self, line: bytes) -> tuple[str, bytes] | None:
        if not line:
            self._size = 0
            if not self._pending:
                return None
            event = (self._event or "message", b"\n".join(self._data))
            self._event, self._data, self._pending = "", [], False
            return event
        if line[0] == 0x3A:  # ":" a comment
            return None
        self._size += len(line)
        self._check()
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._pending = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
            self._pending = True
        elif name == b"id":
            if b"\0" not in value:
                self.last_id = value.decode("utf-8", "replace")
                self._pending = True
        elif name == b"retry":
            try:
                self.retry = int(value)
                self._pending = True
            except ValueError:
                pass
        return None

    def _check(self, pending: int = 0) -> None:
        if self._size + pending > self.max_event_size:
            raise SseError(f"Server-sent event exceeded the {self.max_event_size} byte limit.")
