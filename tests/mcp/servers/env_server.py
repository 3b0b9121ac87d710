"""A stdio MCP server answering its own environment (``environment()``, JSON), its process id
(``pid()``) and, after a while, ``slow(seconds)``.

Run by path (``python tests/mcp/servers/env_server.py``): the gateway gives a stdio server a
minimal environment, without the ``PYTHONPATH`` a ``-m tests...`` module name would need.
"""

from __future__ import annotations

import json
import os
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("bifrost-test-env", version="1.0")


@server.tool()
def environment() -> str:
    """This process's environment variables, as a JSON object."""
    return json.dumps(dict(os.environ), sort_keys=True)


@server.tool()
def pid() -> int:
    """This process's id."""
    return os.getpid()


@server.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "slept"


if __name__ == "__main__":
    server.run("stdio")
