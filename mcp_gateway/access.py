"""Who calls ``/mcp`` and which tools that caller may see and call.

Identity, checked on every request against configuration that is current (the process caches
of ``governance.metering.snapshot``, dropped on every committed change: no stale grants):

1. ``Authorization: Bearer <token>`` whose token does not start with ``sk-bf-``: a consent
   session's access token (``consent``), by digest; expired, revoked or unknown = none. The
   session's identity is its VK (which must still be usable and hold the value it held when
   access was granted: rotating the key ends the session) or a user id.
2. Otherwise a virtual key (``x-bf-vk``, ``Authorization: Bearer sk-bf-…``, ``x-api-key``).
3. Neither: 401. When any per-user-OAuth MCP client exists the 401 carries ``WWW-Authenticate:
   Bearer resource_metadata=…`` so an MCP client can start the consent flow by itself; with
   ``GOVERNANCE_ENFORCE_VIRTUAL_KEYS=false`` an anonymous caller is let in instead.

Tools: a VK's ``mcp_configs`` name, per client, the tools it may use (``["*"]`` all, a list those,
``[]`` none: an explicit ``[]`` also excludes a client that is allowed on every key); a client
without a config for the key counts only when it is ``allow_on_all_virtual_keys``. That is
intersected with the client's own ``tools_to_execute``. A caller without a VK (a user-id
session, or anonymous) sees only the tools of allow-on-all clients: a user id is unverified.
The headers ``x-bf-mcp-include-clients`` and ``x-bf-mcp-include-tools`` (comma lists of client
names and of prefixed tool names) can only narrow that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from consent.selectors import consent_session_for_access_token
from governance.keys import VK_PREFIX, presented_virtual_key
from governance.metering import snapshot
from governance.metering.snapshot import VirtualKeySnapshot
from governance.models import McpClient
from governance.models.mcp import TOOL_SEPARATOR


class AccessDenied(Exception):
    """The caller may not use ``/mcp`` at all: answered with ``status`` and no tool."""

    def __init__(self, status: int, message: str, *, type_: str, challenge: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.type_, self.challenge = status, message, type_, challenge


@dataclass(frozen=True, slots=True)
class Caller:
    vk: VirtualKeySnapshot | None
    user_id: str = ""
    session_id: str = ""
    # client_id → the tool names the caller's VK allows on that client (None = every tool).
    vk_tools: dict[int, tuple[str, ...] | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.vk is not None:
            return f"virtual key '{self.vk.name}'"
        return f"user '{self.user_id}'" if self.user_id else "an anonymous caller"


def caller_of(meta: Mapping[str, Any]) -> Caller:
    """The identity behind a request, from its WSGI environ / ``request.META`` (``AccessDenied``
    when there is none it may act as)."""
    now = timezone.now()
    auth = str(meta.get("HTTP_AUTHORIZATION", "")).strip()
    scheme, _, token = auth.partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token and token[:6].lower() != VK_PREFIX:
        session = consent_session_for_access_token(token, now=now)
        if session is None:
            raise AccessDenied(
                401, "The access token is invalid, expired or revoked", type_="invalid_token", challenge=True
            )
        if session.virtual_key is None:
            if settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS:
                raise AccessDenied(
                    401,
                    "This session has no virtual key and this gateway requires one: re-authenticate and "
                    "choose 'Virtual Key' on the identity page",
                    type_="virtual_key_required",
                    challenge=True,
                )
            return Caller(vk=None, user_id=session.user_id, session_id=str(session.id))
        if session.virtual_key_digest != session.virtual_key.value_digest:
            message = "The virtual key of this session was rotated: re-authenticate"
            raise AccessDenied(401, message, type_="invalid_token", challenge=True)
        vk = snapshot.virtual_key_by_digest(session.virtual_key.value_digest)
        if vk is None:
            raise AccessDenied(401, "virtual key not found", type_="virtual_key_not_found", challenge=True)
        _check_usable(vk)
        return Caller(vk=vk, session_id=str(session.id), vk_tools=dict(vk.mcp_tools))
    value = presented_virtual_key(dict(meta))
    if value is None:
        if settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS:
            raise AccessDenied(
                401,
                "virtual key is required. Provide a virtual key via the x-bf-vk header, or connect through "
                "the gateway's OAuth consent flow",
                type_="virtual_key_required",
                challenge=McpClient.objects.filter(per_user_oauth=True).exists(),
            )
        return Caller(vk=None)
    presented = snapshot.virtual_key(value)  # cached; fresh by the configuration generation
    if presented is None:
        raise AccessDenied(401, "virtual key not found", type_="virtual_key_not_found")
    _check_usable(presented)
    return Caller(vk=presented, vk_tools=dict(presented.mcp_tools))


def _check_usable(vk: VirtualKeySnapshot) -> None:
    if not vk.is_active:
        raise AccessDenied(403, "Virtual key is inactive", type_="virtual_key_blocked")
    if vk.is_expired:
        raise AccessDenied(403, "Virtual key has expired", type_="virtual_key_blocked")


def _header_list(meta: Mapping[str, Any], name: str) -> set[str] | None:
    raw = meta.get(name)
    if raw is None:
        return None
    return {item.strip() for item in raw.split(",") if item.strip()}


@dataclass(frozen=True, slots=True)
class Grant:
    """What a caller may use of one client: None = every tool the client offers."""

    client: McpClient
    tools: frozenset[str] | None


def grants(caller: Caller, meta: Mapping[str, Any]) -> list[Grant]:
    """The clients (and tool names on each) this caller may use on this request."""
    include_clients = _header_list(meta, "HTTP_X_BF_MCP_INCLUDE_CLIENTS")
    include_tools = _header_list(meta, "HTTP_X_BF_MCP_INCLUDE_TOOLS")
    out: list[Grant] = []
    for client in snapshot.mcp_clients():
        allowed = _vk_allowance(caller, client)
        if allowed == frozenset():
            continue
        own = client.tools_to_execute or []
        if not own:
            continue
        if "*" not in own:
            allowed = frozenset(own) if allowed is None else allowed & frozenset(own)
        if include_clients is not None and client.name not in include_clients:
            continue
        if include_tools is not None:
            prefix = client.name + TOOL_SEPARATOR
            named = frozenset(t[len(prefix) :] for t in include_tools if t.startswith(prefix))
            allowed = named if allowed is None else allowed & named
        if allowed != frozenset():
            out.append(Grant(client, allowed))
    return out


def _vk_allowance(caller: Caller, client: McpClient) -> frozenset[str] | None:
    """None = every tool; an empty set = none."""
    if caller.vk is not None and client.pk in caller.vk_tools:
        tools = caller.vk_tools[client.pk]
        return None if tools is None else frozenset(tools)
    return None if client.allow_on_all_virtual_keys else frozenset()


def split_tool_name(name: str, clients: Iterable[McpClient]) -> tuple[McpClient, str] | None:
    """The client whose prefix ``name`` carries (the longest matching name wins) and the tool's own name."""
    best: tuple[McpClient, str] | None = None
    for client in clients:
        prefix = client.name + TOOL_SEPARATOR
        if name.startswith(prefix) and len(name) > len(prefix):
            if best is None or len(client.name) > len(best[0].name):
                best = (client, name[len(prefix) :])
    return best
