"""MCP tools offered to a model: ``/v1/chat/completions`` with ``x-bf-mcp-include-clients`` or
``x-bf-mcp-include-tools`` gets the caller's granted MCP tools (narrowed by those headers, as on
``/mcp``) appended to its ``tools`` as OpenAI function tools named ``<client>_<tool>`` with the
tool's input schema as parameters. The model's calls come back to the application, which runs them
through ``/v1/mcp/tool/execute``; the gateway does not execute them itself (no agent mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp_gateway import access, tools

HEADERS = ("HTTP_X_BF_MCP_INCLUDE_CLIENTS", "HTTP_X_BF_MCP_INCLUDE_TOOLS")


def wanted(environ: Mapping[str, Any]) -> bool:
    return any(name in environ for name in HEADERS)


def openai_tools(environ: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The granted tools as OpenAI chat function tools (none when the caller has no access)."""
    try:
        caller = access.caller_of(environ)
    except access.AccessDenied:
        return []
    return [
        {
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool.get("description") or "",
                "parameters": tool.get("inputSchema") or {"type": "object", "properties": {}},
            },
        }
        for tool in tools.listed(access.grants(caller, environ), caller)
    ]
