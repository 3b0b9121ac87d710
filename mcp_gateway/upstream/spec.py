"""``ClientSpec``: everything a connection to one upstream MCP server needs, read from its row."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mcp_gateway.upstream.errors import UpstreamError, safe_url

if TYPE_CHECKING:
    from governance.models import McpClient

ENV_PREFIX = "env."
# The only variables of the gateway's own environment a stdio server inherits (the rest holds
# secrets: the database URL, the encryption key, provider keys). The SDK adds its own short list
# of harmless ones (HOME, LOGNAME, PATH, SHELL, TERM, USER) under these.
SAFE_ENV_NAMES = ("PATH", "HOME", "LANG")


@dataclass(frozen=True, repr=False)
class ClientSpec:
    """What a connection to an upstream needs. Secrets (headers, env values, the URL's userinfo and
    query, the command's arguments) stay out of ``repr``; compare specs by ``fingerprint``."""

    client_id: str
    name: str
    connection_type: str  # "http", "sse" or "stdio"
    url: str = ""
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, compare=False)
    headers: Mapping[str, str] = field(default_factory=dict, compare=False)
    timeout_seconds: float = 30.0
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint_of(self))

    def __repr__(self) -> str:
        where = safe_url(self.url) if self.connection_type != "stdio" else self.command
        return (
            f"ClientSpec(client_id={self.client_id!r}, name={self.name!r}, connection_type={self.connection_type!r}, "
            f"target={where!r}, timeout_seconds={self.timeout_seconds!r}, fingerprint={self.fingerprint[:12]!r})"
        )

    @property
    def target(self) -> str:
        """Where it connects, safe to show: the URL without userinfo and query, or the command."""
        return self.command if self.connection_type == "stdio" else safe_url(self.url)

    def secrets(self) -> list[str]:
        """Values that must never appear in a message."""
        values = [*self.headers.values(), *self.env.values()]
        try:
            parts = urlsplit(self.url)
            values += [parts.query, parts.fragment, parts.password or "", parts.username or ""]
        except ValueError:
            values.append(self.url)
        return values


def fingerprint_of(spec: ClientSpec) -> str:
    """A hash of everything that affects the connection (not the name, not the timeout)."""
    material: dict[str, Any] = {
        "type": spec.connection_type,
        "url": spec.url,
        "command": spec.command,
        "args": list(spec.args),
        "env": dict(sorted(spec.env.items())),
        "headers": dict(sorted(spec.headers.items())),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def resolve_env(value: str, *, client: str, what: str) -> str:
    """``env.NAME`` → the gateway's ``$NAME``; any other value unchanged."""
    if not value.startswith(ENV_PREFIX):
        return value
    name = value[len(ENV_PREFIX) :]
    resolved = os.environ.get(name)
    if resolved is None:
        raise UpstreamError(
            f"MCP client '{client}': {what} refers to the environment variable {name}, which is not set"
        )
    return resolved


def child_environment(spec: ClientSpec) -> dict[str, str]:
    """A stdio server's environment: the safe base of the gateway's own, then its configured ``envs``."""
    base = {name: os.environ[name] for name in SAFE_ENV_NAMES if name in os.environ}
    return base | dict(spec.env)


def spec_of(client: McpClient) -> ClientSpec:
    """The ``ClientSpec`` of an ``McpClient`` row: ``env.NAME`` values resolved, headers decrypted."""
    name = client.name
    kind = str(client.connection_type)
    timeout = float(client.timeout_seconds or 30.0)
    if kind == "stdio":
        config = client.stdio_config if isinstance(client.stdio_config, dict) else {}
        command = config.get("command")
        if not isinstance(command, str) or not command:
            raise UpstreamError(f"MCP client '{name}': stdio_config has no command")
        args = config.get("args") or []
        if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
            raise UpstreamError(f"MCP client '{name}': stdio_config.args must be a list of strings")
        envs = config.get("envs") or {}
        if not isinstance(envs, dict):
            raise UpstreamError(f"MCP client '{name}': stdio_config.envs must be an object")
        env = {str(key): resolve_env(str(value), client=name, what=f"stdio env {key}") for key, value in envs.items()}
        return ClientSpec(
            client_id=client.client_id,
            name=name,
            connection_type=kind,
            command=command,
            args=tuple(args),
            env=env,
            headers=dict(client.headers),
            timeout_seconds=timeout,
        )
    if kind not in ("http", "sse"):
        raise UpstreamError(f"MCP client '{name}': unknown connection type {kind!r}")
    url = resolve_env(client.connection_string.strip(), client=name, what="connection_string")
    scheme = urlsplit(url).scheme if url else ""
    if scheme not in ("http", "https"):
        raise UpstreamError(f"MCP client '{name}': connection_string must be an http(s) URL")
    return ClientSpec(
        client_id=client.client_id,
        name=name,
        connection_type=kind,
        url=url,
        headers=dict(client.headers),
        timeout_seconds=timeout,
    )
