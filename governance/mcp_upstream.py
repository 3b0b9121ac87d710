"""The seam between governance and the MCP gateway's upstream connections (``mcp_gateway.upstream``).

Governance never imports ``mcp_gateway`` at module level (``mcp_gateway`` imports governance's
models; the dependency runs that way). Yet managing an MCP client needs its upstream: a client is
created only after its server answered ``tools/list``, the list shows each client's state and
tools, reconnect and delete act on the live connection. So:

- the services in ``governance.services.mcp_clients`` take a ``Connector`` argument (``None``: no
  connection is made, as in the config import) and never name ``mcp_gateway``;
- the management API and the admin pass ``connector()``, the one place here that names
  ``mcp_gateway.upstream``, imported when first called (tests replace ``connector`` with a fake);
- ``discover`` gives the state and tools of many clients at once, each bounded in time, for the
  list and the admin: a server that does not answer shows ``error``, never a failed page.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from django.conf import settings

from governance.models import McpClient
from governance.models.mcp import TOOL_SEPARATOR, AuthType

# How long the list and the admin wait for the clients of one page (in parallel) before showing
# those still silent as ``error``. Tools are cached by ``mcp_gateway.upstream``: only a server not
# connected yet takes a round trip.
DISCOVERY_SECONDS = settings.MCP_DISCOVERY_SECONDS
DISCOVERY_THREADS = 8
STATES = ("connected", "disconnected", "error", "pending_tools")


class Connector(Protocol):
    """What governance uses of ``mcp_gateway.upstream`` (its docstring is the reference)."""

    UpstreamError: type[Exception]

    def spec_of(self, client: McpClient) -> Any: ...

    def tools(self, spec: Any, *, refresh: bool = False) -> list[dict[str, Any]]: ...

    def state(self, spec: Any) -> str: ...

    def reconnect(self, spec: Any) -> None: ...

    def forget(self, client_id: str) -> None: ...


def connector() -> Connector:
    """``mcp_gateway.upstream``, imported on first use (a module is a ``Connector``)."""
    return cast(Connector, importlib.import_module("mcp_gateway.upstream"))


@dataclass(frozen=True)
class Discovery:
    """A client's connection state and its tools as the gateway offers them (prefixed names)."""

    state: str
    tools: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    @property
    def tool_names(self) -> list[str]:
        """The tools' own names, as ``tools_to_execute`` lists them."""
        return [tool["tool"] for tool in self.tools]


def offered_tools(client: McpClient, tools: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """MCP ``Tool`` dicts as the API shows them (Bifrost's ``name``/``description``/``parameters``),
    named ``<client>_<tool>`` as the gateway's ``/mcp`` offers them, sorted by name."""
    out = []
    for tool in tools:
        name = tool.get("name")
        if not isinstance(name, str):
            continue
        out.append(
            {
                "name": f"{client.name}{TOOL_SEPARATOR}{name}",
                "tool": name,
                "description": tool.get("description") or "",
                "parameters": tool.get("inputSchema") or {},
            }
        )
    return sorted(out, key=lambda item: item["name"])


def _probe(conn: Connector, client: McpClient, spec: Any) -> Discovery:
    if client.auth_type == AuthType.PER_USER_OAUTH:
        # No connection of the gateway's own: each user's is made with their token.
        state = conn.state(spec)
        return Discovery(state if state in STATES else "disconnected")
    try:
        tools = conn.tools(spec)
    except conn.UpstreamError as exc:
        return Discovery("error", [], str(exc))
    state = conn.state(spec)
    if state not in STATES:
        state = "error"
    last_error = getattr(conn, "last_error", None)  # optional in the interface
    error = (last_error(spec) or "") if state == "error" and last_error is not None else ""
    return Discovery(state, offered_tools(client, tools), error)


def discover(clients: list[McpClient], conn: Connector | None = None) -> dict[int, Discovery]:
    """State and tools of each client by pk, within ``DISCOVERY_SECONDS`` for all of them.

    Never raises: a client whose server fails, whose spec cannot be built (an ``env.NAME`` not
    set) or that has not answered in time is ``error`` with the reason; so are all of them when
    the MCP gateway itself cannot be loaded.
    """
    if not clients:
        return {}
    try:
        conn = conn or connector()
    except Exception as exc:  # a broken deployment must not break the pages that would show it
        return {c.pk: Discovery("error", [], f"the MCP gateway is unavailable: {exc}") for c in clients}
    results: dict[int, Discovery] = {}
    specs: dict[int, Any] = {}
    for client in clients:  # in this thread: building a spec may read settings and decrypt
        try:
            specs[client.pk] = conn.spec_of(client)
        except Exception as exc:
            results[client.pk] = Discovery("error", [], str(exc))
    pending = [c for c in clients if c.pk in specs]
    if not pending:
        return results
    pool = ThreadPoolExecutor(max_workers=min(DISCOVERY_THREADS, len(pending)), thread_name_prefix="mcp-discover")
    try:
        futures = {pool.submit(_probe, conn, c, specs[c.pk]): c for c in pending}
        done, _ = wait(futures, timeout=DISCOVERY_SECONDS)
        for future, client in futures.items():
            if future not in done:
                results[client.pk] = Discovery("error", [], f"no answer within {DISCOVERY_SECONDS:g} s")
            elif future.exception() is not None:
                results[client.pk] = Discovery("error", [], str(future.exception()))
            else:
                results[client.pk] = future.result()
    finally:
        # Threads still waiting on a silent server finish on their own (the upstream's own timeout).
        pool.shutdown(wait=False, cancel_futures=True)
    return results
