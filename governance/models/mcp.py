"""Upstream MCP servers the gateway connects to (``McpClient``), and which virtual keys may use
their tools (``VirtualKeyMcpConfig``).

Field names and meanings follow Bifrost's MCP client config. ``tools_to_execute`` is deny by
default: ``[]`` (or omitted) = no tool, ``["*"]`` = every tool, a list = those tools. Headers sent
to the upstream are secrets (API keys): encrypted at rest like provider keys, write-only, shown
masked. ``connection_string`` and the values of ``stdio_config.envs`` may be ``env.NAME``, read
from the gateway's environment when connecting.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from governance import crypto
from governance.keys import mask_secret

# A client's name prefixes its tools' names (``<name>_<tool>``) on the gateway's MCP server.
MCP_CLIENT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
TOOL_SEPARATOR = "_"


def new_mcp_client_id() -> str:
    return uuid.uuid4().hex


class ConnectionType(models.TextChoices):
    HTTP = "http", "Streamable HTTP"
    SSE = "sse", "SSE (legacy)"
    STDIO = "stdio", "stdio (a local command)"


class AuthType(models.TextChoices):
    NONE = "none", "None"
    HEADERS = "headers", "Headers"
    OAUTH = "oauth", "OAuth (the gateway's own client credentials)"
    PER_USER_OAUTH = "per_user_oauth", "Per-user OAuth"


class McpClient(models.Model):
    """An upstream MCP server whose tools the gateway serves on ``/mcp`` to the keys allowed them."""

    client_id = models.CharField(max_length=64, unique=True, default=new_mcp_client_id, editable=False)
    name = models.CharField(max_length=63, unique=True)
    connection_type = models.CharField(max_length=8, choices=ConnectionType.choices, default=ConnectionType.HTTP)
    # The server's URL for http and sse; unused for stdio.
    connection_string = models.CharField(max_length=2000, blank=True, default="")
    # stdio only: {"command": "...", "args": [...], "envs": {"NAME": "value" | "env.NAME"}}.
    stdio_config = models.JSONField(default=dict, blank=True)
    auth_type = models.CharField(max_length=16, choices=AuthType.choices, default=AuthType.NONE)
    # Kept in step with auth_type (the consent flow filters on it).
    per_user_oauth = models.BooleanField(default=False, help_text="Users connect with their own OAuth identity.")
    headers_encrypted = models.TextField(blank=True, default="", editable=False)
    oauth_config = models.JSONField(default=dict, blank=True)
    tools_to_execute = models.JSONField(default=list, blank=True)
    allowed_extra_headers = models.JSONField(default=list, blank=True)
    # Dollars charged per call of a tool, by tool name (strings of decimals): {"search": "0.01"}.
    tool_pricing = models.JSONField(default=dict, blank=True)
    timeout_seconds = models.FloatField(default=30.0, validators=[MinValueValidator(0.1)])
    allow_on_all_virtual_keys = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "MCP client"

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        # The two fields say one thing, auth_type first; a new row given only the older flag gets
        # the matching auth_type.
        if self._state.adding and self.per_user_oauth and self.auth_type == AuthType.NONE:
            self.auth_type = AuthType.PER_USER_OAUTH
        self.per_user_oauth = self.auth_type == AuthType.PER_USER_OAUTH
        super().save(*args, **kwargs)

    def clean(self) -> None:
        super().clean()
        if not MCP_CLIENT_NAME_RE.fullmatch(self.name or ""):
            raise ValidationError({"name": "letters, digits, '_' or '-' (it prefixes the tool names), at most 63"})

    # --- headers: encrypted at rest, write-only ---------------------------------------------

    @property
    def headers(self) -> dict[str, str]:
        if not self.headers_encrypted:
            return {}
        value = json.loads(crypto.decrypt(self.headers_encrypted))
        return value if isinstance(value, dict) else {}

    def set_headers(self, headers: dict[str, str]) -> None:
        self.headers_encrypted = crypto.encrypt(json.dumps(headers)) if headers else ""

    @property
    def masked_headers(self) -> dict[str, str]:
        return {name: mask_secret(value[-4:]) for name, value in self.headers.items()}


class VirtualKeyMcpConfig(models.Model):
    """Links a virtual key to an MCP client and lists the tools it may execute (``["*"]`` = all)."""

    virtual_key = models.ForeignKey("governance.VirtualKey", on_delete=models.CASCADE, related_name="mcp_configs")
    mcp_client = models.ForeignKey(McpClient, on_delete=models.CASCADE, related_name="virtual_key_configs")
    tools_to_execute = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name = "VK MCP config"
        constraints = [
            models.UniqueConstraint(fields=["virtual_key", "mcp_client"], name="vk_mcp_config_unique_client"),
        ]

    def __str__(self) -> str:
        return f"{self.virtual_key} → {self.mcp_client}"
