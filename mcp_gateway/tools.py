"""Listing and running the tools a caller may use: shared by ``/mcp`` and ``/v1/mcp/tool/execute``.

A tool is named ``<client name>_<tool name>`` (the longest client name that prefixes it wins).
``run`` decides in this order: an unknown tool is :class:`InvalidCall` (JSON-RPC ``-32602``);
a tool the caller may not use, a refusal by the request limits or budgets, an upstream that is
down, fails or times out are tool results with ``isError: true`` and a message saying which;
otherwise the upstream's result, unchanged. Only the client's configured headers and the
caller's request headers named in its ``allowed_extra_headers`` go upstream; never the caller's
credentials or cookies.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest

from governance.metering import snapshot
from governance.metering.counters.base import Rejection
from governance.models import McpClient
from mcp_gateway import access, metering, upstream, user_oauth
from mcp_gateway.access import Caller, Grant

logger = logging.getLogger("bifrost.mcp")

# Never sent upstream whatever a client's allowed_extra_headers say: credentials and cookies.
NEVER_FORWARDED = frozenset({"authorization", "cookie", "x-api-key", "x-bf-vk", "x-goog-api-key", "api-key"})


class InvalidCall(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def listed(grants: list[Grant], caller: Caller | None = None) -> list[dict[str, Any]]:
    """The granted tools as MCP ``Tool`` dicts with prefixed names; a server that cannot be
    reached is left out (and logged) rather than hiding the others. A per-user OAuth client is
    listed with the caller's own token (``mcp_gateway.user_oauth``)."""
    out: list[dict[str, Any]] = []
    for grant in grants:
        client = grant.client
        try:
            spec = upstream.spec_of(client)
            offered = (
                user_oauth.tools_for(client, spec, caller) if user_oauth.is_per_user(client) else upstream.tools(spec)
            )
        except upstream.UpstreamError as exc:
            logger.warning("mcp client unavailable", extra={"mcp_client": client.name, "error": str(exc)})
            continue
        for tool in offered:
            if grant.tools is None or tool.get("name") in grant.tools:
                out.append({**tool, "name": f"{client.name}_{tool['name']}"})
    return out


def tool_error(message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "isError": True}


def run(request: HttpRequest, caller: Caller, name: Any, arguments: Any) -> dict[str, Any]:
    """One tool call for ``caller``: its result (see the module doc)."""
    if not isinstance(name, str) or not name:
        raise InvalidCall("params.name must be the tool's name")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise InvalidCall("params.arguments must be an object")
    found = access.split_tool_name(name, snapshot.mcp_clients())
    if found is None:
        raise InvalidCall(f"Unknown tool: {name}")
    client, tool = found
    spec = upstream.spec_of(client)
    per_user = user_oauth.is_per_user(client)  # the caller's own token, refreshed if it expired
    bearer = user_oauth.bearer_for(client, caller) if per_user else None
    try:
        offered = user_oauth.offered_tools(spec, caller, bearer) if per_user else upstream.tools(spec)
    except user_oauth.TokenRejected:
        return user_oauth.connect_required(request, client, caller)
    except upstream.UpstreamError as exc:
        return tool_error(f"MCP client '{client.name}' is unavailable: {exc}")
    if offered is not None and tool not in {t.get("name") for t in offered}:
        raise InvalidCall(f"Unknown tool: {name}")
    grant = next((g for g in access.grants(caller, request.META) if g.client.pk == client.pk), None)
    if grant is None or (grant.tools is not None and tool not in grant.tools):
        return tool_error(f"mcp_tool_blocked: tool '{name}' is not allowed for {caller.label}")
    if per_user and bearer is None:
        return user_oauth.connect_required(request, client, caller)
    ticket = metering.begin(client, tool, caller.vk)
    if isinstance(ticket, Rejection):
        return tool_error(f"{ticket.type}: {ticket.message}")
    try:
        result = upstream.call_tool(spec, tool, arguments, headers=extra_headers(request, client), bearer=bearer)
    except upstream.ToolTimeout as exc:
        metering.finish(ticket, 504)
        return tool_error(str(exc))
    except upstream.UpstreamError as exc:
        metering.finish(ticket, 502)
        return tool_error(f"MCP client '{client.name}' failed: {exc}")
    metering.finish(ticket, 200)
    return result


def extra_headers(request: HttpRequest, client: McpClient) -> dict[str, str] | None:
    """The caller's request headers the client allows through (never credentials or cookies)."""
    out: dict[str, str] = {}
    for name in client.allowed_extra_headers or ():
        lower = name.lower()
        if lower in NEVER_FORWARDED:
            continue
        value = request.META.get("HTTP_" + lower.upper().replace("-", "_"))
        if value is not None:
            out[lower] = value
    return out or None
