"""MCP clients offered by the consent flow, and which virtual keys may use them."""

from __future__ import annotations

from django.db import models


class McpClient(models.Model):
    """An MCP server connection the gateway can expose to users of the consent flow."""

    name = models.CharField(max_length=255, unique=True)
    per_user_oauth = models.BooleanField(default=False, help_text="Users connect with their own OAuth identity.")
    allow_on_all_virtual_keys = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "MCP client"

    def __str__(self) -> str:
        return self.name


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
