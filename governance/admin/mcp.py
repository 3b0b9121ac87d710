"""MCP clients and the virtual keys allowed to use them."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, TypedDict

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from governance.admin.common import GovernanceModelAdmin, ServiceAdminMixin, Services, adopt
from governance.forms import McpConfigInlineForm
from governance.models import McpClient, VirtualKeyMcpConfig
from governance.services.virtual_keys import mcp_configs_replace

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class _KeyCount(TypedDict):
    key_count: int


@admin.register(McpClient)
class McpClientAdmin(GovernanceModelAdmin[McpClient]):
    """MCP clients are plain records (no invariants beyond the model's), edited as rows."""

    list_display = ["name", "per_user_oauth", "allow_on_all_virtual_keys", "keys", "created_at"]
    list_filter = ["per_user_oauth", "allow_on_all_virtual_keys"]
    search_fields = ["name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[McpClient]:
        return super().get_queryset(request).annotate(key_count=Count("virtual_key_configs"))

    @admin.display(description="virtual keys", ordering="key_count")
    def keys(self, client: WithAnnotations[McpClient, _KeyCount]) -> int:
        return client.key_count


def _replace_without(pk: int | None, vk_id: uuid.UUID | None) -> None:
    """Replace the MCP list of the key ``vk_id`` with the same list less the row ``pk``."""
    rows = list(VirtualKeyMcpConfig.objects.filter(virtual_key_id=vk_id).select_related("mcp_client", "virtual_key"))
    if rows:
        specs = [
            {"mcp_client_name": c.mcp_client.name, "tools_to_execute": c.tools_to_execute} for c in rows if c.pk != pk
        ]
        mcp_configs_replace(vk=rows[0].virtual_key, configs=specs)


def _mcp_config_delete(config: VirtualKeyMcpConfig) -> None:
    _replace_without(config.pk, config.virtual_key_id)


class VirtualKeyMcpConfigForm(McpConfigInlineForm):
    class Meta(McpConfigInlineForm.Meta):
        fields = ["virtual_key", "mcp_client", "tools_to_execute"]


@admin.register(VirtualKeyMcpConfig)
class VirtualKeyMcpConfigAdmin(ServiceAdminMixin[VirtualKeyMcpConfig], GovernanceModelAdmin[VirtualKeyMcpConfig]):
    """Each save replaces the key's whole MCP list through the service, this row changed."""

    form = VirtualKeyMcpConfigForm
    list_display = ["virtual_key", "mcp_client", "tools"]
    list_filter = ["mcp_client"]
    search_fields = ["virtual_key__name", "mcp_client__name"]
    list_select_related = ["virtual_key", "mcp_client"]
    autocomplete_fields = ["virtual_key", "mcp_client"]
    services = Services(delete=_mcp_config_delete, instance="config")  # saved by ``save_model`` below

    @admin.display(description="tools to execute")
    def tools(self, config: VirtualKeyMcpConfig) -> str:
        return ", ".join(config.tools_to_execute) or "none"

    def save_model(
        self,
        request: HttpRequest,
        obj: VirtualKeyMcpConfig,
        form: forms.ModelForm[VirtualKeyMcpConfig],
        change: bool,
    ) -> None:
        vk = form.cleaned_data["virtual_key"]
        specs = [
            {"mcp_client_name": c.mcp_client.name, "tools_to_execute": c.tools_to_execute}
            for c in VirtualKeyMcpConfig.objects.filter(virtual_key=vk).select_related("mcp_client")
            if c.pk != obj.pk and c.mcp_client_id != obj.mcp_client_id
        ]
        specs.append({"mcp_client_name": obj.mcp_client.name, "tools_to_execute": obj.tools_to_execute})
        if change and vk.pk != form.initial.get("virtual_key"):
            # Moved to another key: take it off the old one too.
            self.run_service(_replace_without, obj.pk, form.initial.get("virtual_key"))
        self.run_service(mcp_configs_replace, vk=vk, configs=specs)
        adopt(obj, VirtualKeyMcpConfig.objects.get(virtual_key=vk, mcp_client=obj.mcp_client))
