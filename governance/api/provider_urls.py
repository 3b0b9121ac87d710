"""Routes of the management API outside ``/api/governance/``, included at ``/api/`` (no trailing
slashes, as Bifrost): providers and their keys, MCP clients (Bifrost's paths: the list is
``mcp/clients``, one client ``mcp/client/{client_id}``), the usage logs (``logs``, ``logs/stats``)."""

from django.urls import path

from governance.api.logs import LogStatsView, LogsView
from governance.api.mcp import McpClientCreateView, McpClientDetailView, McpClientListView, McpClientReconnectView
from governance.api.providers import (
    KeyListView,
    ProviderDetailView,
    ProviderKeyDetailView,
    ProviderKeyListView,
    ProviderListView,
)

urlpatterns = [
    path("providers", ProviderListView.as_view(), name="provider-list"),
    path("providers/<str:name>", ProviderDetailView.as_view(), name="provider-detail"),
    path("providers/<str:name>/keys", ProviderKeyListView.as_view(), name="provider-key-list"),
    path("providers/<str:name>/keys/<str:key_id>", ProviderKeyDetailView.as_view(), name="provider-key-detail"),
    path("keys", KeyListView.as_view(), name="key-list"),
    path("logs", LogsView.as_view(), name="log-list"),
    path("logs/stats", LogStatsView.as_view(), name="log-stats"),
    path("mcp/clients", McpClientListView.as_view(), name="mcp-client-list"),
    path("mcp/client", McpClientCreateView.as_view(), name="mcp-client-create"),
    path("mcp/client/<str:client_id>", McpClientDetailView.as_view(), name="mcp-client-detail"),
    path("mcp/client/<str:client_id>/reconnect", McpClientReconnectView.as_view(), name="mcp-client-reconnect"),
]
