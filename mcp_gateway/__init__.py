"""The MCP gateway: ``/mcp`` serves the governed tools of upstream MCP servers.

- ``upstream/``: the connections to upstream MCP servers (the official ``mcp`` SDK as the
  client: stdio, streamable HTTP, SSE), one event loop thread per process, tool lists cached.
  Its interface (``mcp_gateway.upstream``), used by the server and by the management API:

  - ``ClientSpec``: what a connection needs, built from a ``governance.models.McpClient`` by
    ``spec_of(client)`` (``env.NAME`` values resolved; headers decrypted); ``fingerprint``
    changes whenever the configuration does, which makes the next use reconnect.
  - ``tools(spec, *, refresh=False) -> list[dict]``: the upstream's tools as MCP ``Tool`` dicts
    (``name``, ``description``, ``inputSchema``, ...), unfiltered and unprefixed; cached per
    process and refreshed every ``MCP_TOOLS_REFRESH_SECONDS`` or on ``refresh``.
  - ``call_tool(spec, name, arguments, *, headers=None, bearer=None) -> dict``: the upstream's
    ``CallToolResult`` as a dict (``content`` blocks, ``isError``, ``structuredContent``),
    unchanged; ``headers`` are extra request headers for this call (the caller's allowed ones),
    ``bearer`` a per-user OAuth token sent as ``Authorization: Bearer``.
  - ``state(spec) -> str``: ``connected``, ``disconnected``, ``error`` or ``pending_tools``.
  - ``reconnect(spec)``, ``forget(client_id)``.
  - ``UpstreamError`` (its message says why, without secrets) and its subclass ``ToolTimeout``.

- ``server.py``: the JSON-RPC endpoint (``initialize``, ``ping``, ``tools/list``, ``tools/call``).
- ``execute.py``: ``POST /v1/mcp/tool/execute``, one tool call in OpenAI chat or Responses form.
- ``access.py``: who is calling (a consent-session bearer token or a virtual key) and which tools
  that identity may see and call.
- ``tools.py``: listing and running the granted tools (shared by the two endpoints).
- ``metering.py``: a tool call's request limits, budgets (tool prices) and ledger row.
"""
