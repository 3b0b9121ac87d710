"""MCP clients (upstream MCP servers) and the virtual keys allowed to use them.

The client pages write through ``governance.services.mcp_clients`` with the gateway's connector
(``governance.mcp_upstream``): a new client, or a change to how to reach one, is saved only once
its server answered. The list shows each client's connection state and tool count, the client's
page its discovered tools; the "reconnect" action remakes the connections of the selected clients.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, TypedDict, cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from governance import mcp_upstream
from governance.admin.common import (
    GovernanceModelAdmin,
    LiveUsageChangeList,
    ServiceAdminMixin,
    Services,
    adopt,
)
from governance.forms import McpClientAdminForm, McpConfigInlineForm
from governance.mcp_upstream import Discovery
from governance.models import McpClient, McpUserToken, VirtualKeyMcpConfig
from governance.services.mcp_clients import (
    mcp_client_create,
    mcp_client_delete,
    mcp_client_reconnect,
    mcp_client_update,
)
from governance.services.virtual_keys import mcp_configs_replace

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldsetSpec
    from django_stubs_ext import WithAnnotations

DISCOVERY_ATTR = "_mcp_discovery"


class _KeyCount(TypedDict):
    key_count: int


def discovery_of(client: McpClient) -> Discovery:
    """The client's state and tools, fetched once per page (the changelist fetches a page's at once)."""
    found: Discovery | None = getattr(client, DISCOVERY_ATTR, None)
    if found is None:
        found = mcp_upstream.discover([client])[client.pk]
        setattr(client, DISCOVERY_ATTR, found)
    return found


def tools_summary(found: Discovery) -> str:
    if found.state == "error":
        return f"unavailable ({found.error})" if found.error else "unavailable"
    return ", ".join(found.tool_names) or "none"


def _create(**fields: Any) -> McpClient:
    return mcp_client_create(**fields, connector=mcp_upstream.connector())


def _delete(client: McpClient) -> None:
    try:
        connector = mcp_upstream.connector()
    except Exception:  # the row goes even when the gateway cannot be loaded
        connector = None
    mcp_client_delete(client=client, connector=connector)


class McpClientChangeList(LiveUsageChangeList):
    """Fetches the state and tools of every client on the page at once, bounded in time."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        rows = list(self.result_list)
        for client_id, found in mcp_upstream.discover(rows).items():
            setattr(next(row for row in rows if row.pk == client_id), DISCOVERY_ATTR, found)


@admin.register(McpClient)
class McpClientAdmin(ServiceAdminMixin[McpClient], GovernanceModelAdmin[McpClient]):
    form = McpClientAdminForm
    list_display = ["name", "connection_type", "endpoint", "auth_type", "state", "tool_count", "keys"]
    list_filter = ["connection_type", "auth_type", "allow_on_all_virtual_keys"]
    search_fields = ["name", "connection_string"]
    readonly_fields = ["client_id", "connection_state", "discovered_tools"]
    actions = ["reconnect"]
    services = Services(create=_create, delete=_delete, instance="client")  # updated by ``save_model``

    def get_queryset(self, request: HttpRequest) -> QuerySet[McpClient]:
        return super().get_queryset(request).annotate(key_count=Count("virtual_key_configs"))

    def has_change_permission(self, request: HttpRequest, obj: McpClient | None = None) -> bool:
        # A stdio client runs a command on the gateway's hosts: only a superuser edits one.
        if obj is not None and obj.connection_type == "stdio" and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def get_form(self, request: HttpRequest, obj: McpClient | None = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if not request.user.is_superuser and "connection_type" in form.base_fields:
            field = form.base_fields["connection_type"]
            field.choices = [c for c in field.choices if c[0] != "stdio"]  # type: ignore[attr-defined]
            field.help_text = "stdio clients (a command run on the gateway's hosts) are a superuser's to add."
        return form

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[McpClientChangeList]:
        return McpClientChangeList

    def get_fieldsets(self, request: HttpRequest, obj: McpClient | None = None) -> _FieldsetSpec:
        name: list[str] = ["name", "client_id"] if obj else ["name"]
        auth: list[str] = ["auth_type", "headers", "oauth_config"]
        if obj is not None:
            auth.insert(2, "clear_headers")
        tools = ["tools_to_execute", "allowed_extra_headers", "tool_pricing", "allow_on_all_virtual_keys"]
        fieldsets: list[tuple[str | None, dict[str, Any]]] = [
            (None, {"fields": name}),
            ("Connection", {"fields": ["connection_type", "connection_string", "stdio_config", "timeout_seconds"]}),
            ("Authentication", {"fields": auth}),
            ("Tools", {"fields": tools}),
        ]
        if obj is not None:
            fieldsets.append(("Upstream", {"fields": ["connection_state", "discovered_tools"]}))
        return cast("_FieldsetSpec", fieldsets)

    # --- columns and read-only fields ----------------------------------------------------------

    @admin.display(description="endpoint")
    def endpoint(self, client: McpClient) -> str:
        if client.connection_type == "stdio":
            command = [client.stdio_config.get("command", ""), *client.stdio_config.get("args", [])]
            return " ".join(command)
        return client.connection_string

    @admin.display(description="state")
    def state(self, client: McpClient) -> str:
        found = discovery_of(client)
        return format_html(
            '<span class="gov-mcp-state gov-mcp-{}" title="{}">{}</span>', found.state, found.error, found.state
        )

    @admin.display(description="tools")
    def tool_count(self, client: McpClient) -> int | str:
        found = discovery_of(client)
        return "—" if found.state == "error" else len(found.tools)

    @admin.display(description="virtual keys", ordering="key_count")
    def keys(self, client: WithAnnotations[McpClient, _KeyCount]) -> int:
        return client.key_count

    @admin.display(description="connection")
    def connection_state(self, client: McpClient) -> str:
        found = discovery_of(client)
        return f"{found.state}: {found.error}" if found.error else found.state

    @admin.display(description="discovered tools")
    def discovered_tools(self, client: McpClient) -> str:
        found = discovery_of(client)
        if not found.tools:
            return "none" if found.state != "error" else "unavailable"
        rows = format_html_join(
            "", "<tr><td><code>{}</code></td><td>{}</td></tr>", ((t["name"], t["description"]) for t in found.tools)
        )
        return format_html('<table class="gov-mcp-tools"><tr><th>name</th><th>description</th></tr>{}</table>', rows)

    # --- saving through the services ---------------------------------------------------------

    def service_data(self, form: forms.ModelForm[McpClient], change: bool) -> dict[str, Any]:
        assert isinstance(form, McpClientAdminForm)
        return form.service_fields()

    def save_model(self, request: HttpRequest, obj: McpClient, form: forms.ModelForm[McpClient], change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        # The form already put its columns on ``obj``: the service gets the stored row, so that it
        # sees what changes (and tries a new connection before saving it).
        stored = McpClient.objects.get(pk=obj.pk)
        updated = self.run_service(
            mcp_client_update, client=stored, connector=mcp_upstream.connector(), **self.service_data(form, change)
        )
        adopt(obj, updated)

    # --- actions -------------------------------------------------------------------------------

    @admin.action(description="Reconnect the selected MCP clients", permissions=["change"])
    def reconnect(self, request: HttpRequest, queryset: QuerySet[McpClient]) -> None:
        connector = mcp_upstream.connector()
        for client in queryset:
            try:
                tools = mcp_client_reconnect(client=client, connector=connector)
            except ValidationError as exc:
                self.message_user(request, "; ".join(exc.messages), messages.ERROR)
            else:
                self.message_user(request, f"Reconnected “{client.name}”: {len(tools)} tools.", messages.SUCCESS)


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.mcp_client_id:
            found = discovery_of(self.instance.mcp_client)
            self.fields[
                "tools_to_execute"
            ].help_text += f" Tools of {self.instance.mcp_client.name}: {tools_summary(found)}."


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


@admin.register(McpUserToken)
class McpUserTokenAdmin(admin.ModelAdmin):
    """Per-user OAuth tokens (``mcp_gateway.user_oauth``): looked at and revoked, never shown or
    edited (the token values are encrypted and no page names them)."""

    list_display = ["mcp_client", "identity", "has_refresh_token", "expires_at", "created_at", "updated_at"]
    list_filter = ["mcp_client"]
    search_fields = ["mcp_client__name", "virtual_key__name", "user_id"]
    list_select_related = ["mcp_client", "virtual_key"]
    fields = ["mcp_client", "virtual_key", "user_id", "scope", "has_refresh_token", "expires_at", "created_at"]
    readonly_fields = ["mcp_client", "virtual_key", "user_id", "scope", "has_refresh_token", "expires_at", "created_at"]
    actions = ["revoke"]

    @admin.display(description="identity")
    def identity(self, token: McpUserToken) -> str:
        return token.identity_label

    @admin.display(boolean=True, description="refresh token")
    def has_refresh_token(self, token: McpUserToken) -> bool:
        return bool(token.refresh_token_encrypted)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: McpUserToken | None = None) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens (the users connect again)", permissions=["delete"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[McpUserToken]) -> None:
        count, _ = queryset.delete()
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)
