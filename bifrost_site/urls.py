"""Top-level URL map: admin, management API, consent flow, health, metrics (the inference paths never reach
Django's URL resolver: ``bifrost_site.wsgi`` hands them to ``proxy.wsgi`` first)."""

from django.contrib import admin
from django.urls import include, path

from bifrost_site.health import health
from governance.dashboard.views import dashboard, usage_csv
from mcp_gateway import user_oauth_views
from mcp_gateway.execute import execute as mcp_tool_execute
from mcp_gateway.server import endpoint as mcp_endpoint
from telemetry.exposition import metrics_view

urlpatterns = [
    path("health", health, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("mcp", mcp_endpoint, name="mcp"),
    path("v1/mcp/tool/execute", mcp_tool_execute, name="mcp-tool-execute"),
    path("admin/usage-dashboard/", dashboard, name="governance-usage-dashboard"),
    path("admin/usage-dashboard/usage.csv", usage_csv, name="governance-usage-csv"),
    path("admin/", admin.site.urls),
    path("api/governance/", include("governance.api.urls")),
    path("api/oauth/per-user/upstream/authorize", user_oauth_views.authorize, name="mcp-oauth-authorize"),
    path("api/oauth/per-user/upstream/connect", user_oauth_views.connect, name="mcp-oauth-connect"),
    path("api/oauth/callback", user_oauth_views.callback, name="mcp-oauth-callback"),
    path("api/", include("governance.api.provider_urls")),
    path("", include("consent.urls")),
]
