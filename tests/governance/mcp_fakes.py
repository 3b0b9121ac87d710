"""A fake of ``mcp_gateway.upstream`` for the MCP client management tests (API, admin, import).

``FakeUpstream`` answers ``tools/list`` from a table of servers by endpoint (the connection
string, or the stdio command), records every call, and can make a server refuse (``down``) or
hang (``slow``). ``install`` puts it behind ``governance.mcp_upstream.connector``, where the API
and the admin find the gateway's connector.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from governance import mcp_upstream
from governance.models import McpClient

TOOLS = [
    {"name": "search", "description": "Search the docs.", "inputSchema": {"type": "object"}},
    {"name": "read", "description": "Read one page.", "inputSchema": {"type": "object", "required": ["id"]}},
]


class UpstreamError(Exception):
    pass


@dataclass(frozen=True)
class Spec:
    client_id: str
    name: str
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    saved: bool  # whether the client row existed when the spec was built


def endpoint_of(client: McpClient) -> str:
    return client.connection_string or (client.stdio_config or {}).get("command", "")


@dataclass
class FakeUpstream:
    servers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    down: dict[str, str] = field(default_factory=dict)  # endpoint → the reason it refuses
    slow: set[str] = field(default_factory=set)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    connected: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)
    serve_everything: bool = False  # every endpoint answers with TOOLS (for fuzzing)

    UpstreamError = UpstreamError

    def serve(self, endpoint: str, tools: list[dict[str, Any]] | None = None) -> None:
        self.servers[endpoint] = TOOLS if tools is None else tools

    def spec_of(self, client: McpClient) -> Spec:
        self.calls.append(("spec_of", client.name))
        saved = client.pk is not None and McpClient.objects.filter(pk=client.pk).exists()
        return Spec(client.client_id, client.name, endpoint_of(client), tuple(sorted(client.headers.items())), saved)

    def tools(self, spec: Spec, *, refresh: bool = False) -> list[dict[str, Any]]:
        self.calls.append(("tools", (spec, refresh)))
        if spec.endpoint in self.slow:
            self.release.wait(10)
        if spec.endpoint in self.down:
            self.connected.discard(spec.client_id)
            raise UpstreamError(self.down[spec.endpoint])
        if spec.endpoint not in self.servers and not self.serve_everything:
            raise UpstreamError(f"connection refused: {spec.endpoint}")
        self.connected.add(spec.client_id)
        return self.servers.get(spec.endpoint, TOOLS)

    def state(self, spec: Spec) -> str:
        return "connected" if spec.client_id in self.connected else "disconnected"

    def reconnect(self, spec: Spec) -> None:
        self.calls.append(("reconnect", spec))
        self.connected.discard(spec.client_id)
        if spec.endpoint in self.down:
            raise UpstreamError(self.down[spec.endpoint])

    def forget(self, client_id: str) -> None:
        self.calls.append(("forget", client_id))
        self.connected.discard(client_id)

    # --- what the tests ask ---------------------------------------------------------------------

    def probes(self) -> list[tuple[Spec, bool]]:
        """The ``tools`` calls made, oldest first: (spec, refresh)."""
        return [args for name, args in self.calls if name == "tools"]

    def named(self, name: str) -> list[Any]:
        return [args for call, args in self.calls if call == name]


def install(monkeypatch: Any, fake: FakeUpstream | None = None) -> FakeUpstream:
    fake = fake or FakeUpstream()
    monkeypatch.setattr(mcp_upstream, "connector", lambda: fake)
    return fake
