"""A streamable-HTTP (or SSE) MCP server built with the ``mcp`` SDK, an upstream of the gateway tests.

Run: ``python -m tests.mcp.servers.http_server --port N [--sse] [--many] [--require-header NAME=VALUE]``.

Stateful streamable HTTP (``Mcp-Session-Id`` is issued on ``initialize``), JSON or SSE responses as
the SDK chooses. Tools:

- ``echo(text)`` → ``text``; ``add(a, b)`` → structured ``{"result": a + b}`` and its text;
- ``slow(seconds)`` sleeps, then answers ``"slept"``; ``fail(message)`` answers ``isError`` with it;
- ``image()`` → one image content block (a 1x1 PNG); ``headers()`` → the HTTP request headers it
  received, as JSON text (lower-cased names);
- ``pid()`` → this process's id (tests restart the server and check the new one answers);
- ``--many``: ``t01`` .. ``t20``, each answering its own name.

``--page-size N`` answers ``tools/list`` in pages of N tools (``nextCursor``), as large servers do.

``--require-header NAME=VALUE`` answers 401 to any HTTP request without that header (as a reverse
proxy in front of an MCP server would).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp_types import ListToolsResult, PaginatedRequestParams
from starlette.types import ASGIApp, Receive, Scope, Send

# A 1x1 transparent PNG.
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def build_server(*, many: bool = False, page_size: int = 0) -> MCPServer:
    server = MCPServer("bifrost-test-http", version="1.0")

    @server.tool()
    def echo(text: str) -> str:
        """Answer the text unchanged."""
        return text

    @server.tool()
    def add(a: float, b: float) -> float:
        """Add two numbers (structured result and its text)."""
        return a + b

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return "slept"

    @server.tool()
    def fail(message: str) -> str:
        """Answer an error result carrying the message."""
        raise ToolError(message)

    @server.tool()
    def image() -> Image:
        """Answer a tiny PNG image."""
        return Image(data=PNG_1X1, format="png")

    @server.tool()
    def headers(ctx: Context) -> str:
        """The HTTP request headers this call arrived with, as JSON."""
        received = ctx.headers or {}
        return json.dumps({name.lower(): value for name, value in received.items()}, sort_keys=True)

    @server.tool()
    def pid() -> int:
        """This server process's id."""
        return os.getpid()

    if many:
        for number in range(1, 21):
            name = f"t{number:02d}"

            def make(tool_name: str):
                def tool() -> str:
                    return tool_name

                return tool

            server.add_tool(make(name), name=name, description=f"Trivial tool {name}.")
    if page_size > 0:

        async def list_tools_paged(ctx: object, params: PaginatedRequestParams) -> ListToolsResult:
            everything = await server.list_tools()
            start = int(params.cursor or 0)
            end = start + page_size
            return ListToolsResult(tools=everything[start:end], next_cursor=str(end) if end < len(everything) else None)

        server._lowlevel_server.add_request_handler("tools/list", PaginatedRequestParams, list_tools_paged)  # type: ignore[arg-type]
    return server


class RequireHeader:
    """ASGI middleware: 401 unless the request carries ``name: value``."""

    def __init__(self, app: ASGIApp, name: str, value: str) -> None:
        self.app = app
        self.name = name.lower().encode("latin-1")
        self.value = value.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (self.name, self.value) not in scope["headers"]:
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--sse", action="store_true", help="serve the legacy SSE transport (/sse) instead")
    parser.add_argument("--many", action="store_true", help="add the trivial tools t01..t20")
    parser.add_argument("--page-size", type=int, default=0, help="list tools in pages of this size")
    parser.add_argument("--require-header", metavar="NAME=VALUE", help="answer 401 without this header")
    args = parser.parse_args()

    server = build_server(many=args.many, page_size=args.page_size)
    app: ASGIApp = server.sse_app(host=args.host) if args.sse else server.streamable_http_app(host=args.host)
    if args.require_header:
        name, _, value = args.require_header.partition("=")
        app = RequireHeader(app, name, value)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
