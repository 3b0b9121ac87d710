"""MCP client management API (Bifrost v1.5 paths, bodies and messages).

- ``GET /api/mcp/clients`` (``limit``, ``offset``, ``search`` on the name): ``{"clients": [...],
  "count", "total_count", "limit", "offset"}``; each client is Bifrost's ``{"config": {...},
  "tools": [...], "state": ..., "vk_configs": [...]}`` (plus ``error`` when the state is ``error``).
  ``config.headers`` and ``config.oauth_config.client_secret`` are masked; ``env.NAME`` values
  are shown as written, never resolved. State and tools come from the gateway's connections
  (``governance.mcp_upstream.discover``): a server that does not answer is ``error`` with no
  tools, never a failed list.
- ``POST /api/mcp/client``: the server is tried before anything is saved (a failure is a 400
  saying why); ``PUT``/``DELETE /api/mcp/client/{client_id}``; ``POST .../{client_id}/reconnect``.
  Successes are 200 ``{"status": "success", "message": ...}``, with the ``client`` after create,
  update and reconnect. A duplicate name or client id is 409.

Validation lives in ``governance.services.mcp_clients`` (shared with the admin and the config
import); the request serializers below only document the bodies in the OpenAPI schema.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bifrost_site.exceptions import django_validation_detail
from governance import mcp_upstream, services
from governance.api import docs, listing
from governance.api.views import Conflict, known_fields
from governance.mcp_upstream import Discovery
from governance.models import McpClient
from governance.models.mcp import AuthType, ConnectionType
from governance.services.mcp_clients import CLIENT_FIELDS, masked_secret

NOT_FOUND = "MCP client not found"
BODY_FIELDS = (*CLIENT_FIELDS, "vk_configs")
REQUIRED = ("name", "connection_type")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
CLIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


def _timestamp(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z")


def config_json(client: McpClient) -> dict[str, Any]:
    """Bifrost's ``MCPClientConfig`` of ``client``, secrets masked."""
    oauth = dict(client.oauth_config or {})
    if oauth.get("client_secret"):
        oauth["client_secret"] = masked_secret(oauth["client_secret"])
    return {
        "client_id": client.client_id,
        "name": client.name,
        "connection_type": client.connection_type,
        "connection_string": client.connection_string,
        "stdio_config": client.stdio_config or None,
        "auth_type": client.auth_type,
        "headers": client.masked_headers,
        "oauth_config": oauth or None,
        "tools_to_execute": client.tools_to_execute,
        "allowed_extra_headers": client.allowed_extra_headers,
        "tool_pricing": {tool: float(Decimal(price)) for tool, price in (client.tool_pricing or {}).items()},
        "timeout_seconds": client.timeout_seconds,
        "allow_on_all_virtual_keys": client.allow_on_all_virtual_keys,
        "created_at": _timestamp(client.created_at),
        "updated_at": _timestamp(client.updated_at),
    }


def client_json(client: McpClient, discovery: Discovery) -> dict[str, Any]:
    """One client as ``GET /api/mcp/clients`` lists it (the VK configs must be prefetched)."""
    body: dict[str, Any] = {
        "config": config_json(client),
        "tools": [{k: v for k, v in tool.items() if k != "tool"} for tool in discovery.tools],
        "state": discovery.state,
        "vk_configs": [
            {
                "virtual_key_id": str(config.virtual_key_id),
                "virtual_key_name": config.virtual_key.name,
                "tools_to_execute": config.tools_to_execute,
            }
            for config in client.virtual_key_configs.all()
        ],
    }
    if discovery.error:
        body["error"] = discovery.error
    return body


def _clients() -> Any:
    return McpClient.objects.prefetch_related("virtual_key_configs__virtual_key").order_by("name", "pk")


def _client_or_404(client_id: str) -> McpClient:
    client = _clients().filter(client_id=client_id).first()
    if client is None:
        raise Http404(NOT_FOUND)
    return client


def _render_one(client_id: str) -> dict[str, Any]:
    client = _client_or_404(client_id)
    return client_json(client, mcp_upstream.discover([client])[client.pk])


def _connector_or_none() -> mcp_upstream.Connector | None:
    """For a delete: the row goes even when the MCP gateway cannot be loaded."""
    try:
        return mcp_upstream.connector()
    except Exception:
        return None


def _call(service: Any, **kwargs: Any) -> Any:
    """A service call whose duplicate name or id is a 409 naming the field."""
    try:
        return service(**kwargs)
    except services.McpClientConflict as exc:
        raise Conflict(django_validation_detail(exc)) from None


# --- OpenAPI shapes (documentation only: the service validates) ---------------------------------


class StdioConfigShape(serializers.Serializer):
    command = serializers.CharField(max_length=1000, required=False, allow_blank=True, help_text="the program to run")
    args = serializers.ListField(child=serializers.CharField(max_length=2000, allow_blank=True), required=False)
    envs = serializers.JSONField(
        required=False,
        help_text='{"NAME": "value" | "env.NAME"}, or Bifrost\'s list of names passed on from the gateway\'s '
        'environment (stored as {"NAME": "env.NAME"})',
    )


class OAuthConfigShape(serializers.Serializer):
    client_id = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    client_secret = serializers.CharField(
        max_length=2000, required=False, allow_blank=True, help_text="write-only: shown masked, or env.NAME as written"
    )
    authorize_url = serializers.URLField(max_length=2000, required=False, allow_blank=True)
    token_url = serializers.URLField(max_length=2000, required=False, allow_blank=True)
    registration_url = serializers.URLField(max_length=2000, required=False, allow_blank=True)
    scopes = serializers.ListField(child=serializers.CharField(), required=False)


class VkConfigShape(serializers.Serializer):
    virtual_key_id = serializers.UUIDField()
    tools_to_execute = serializers.ListField(
        child=serializers.CharField(max_length=255), required=False, help_text='["*"] all, [] none, or tool names'
    )


@extend_schema_field({"oneOf": [{"type": "number", "minimum": 0}, {"type": "string"}]})
class PriceField(serializers.JSONField):
    """Dollars per call: a JSON number or a decimal string, 0 or more, at most 10 decimals."""


class McpClientInput(serializers.Serializer):
    """Body of ``POST /api/mcp/client``."""

    client_id = serializers.RegexField(
        CLIENT_ID_PATTERN, max_length=64, required=False, help_text="chosen by the server when not given"
    )
    name = serializers.RegexField(NAME_PATTERN, max_length=63, help_text="prefixes the tool names: <name>_<tool>")
    connection_type = serializers.ChoiceField(choices=ConnectionType.choices)
    connection_string = serializers.CharField(
        max_length=2000, required=False, allow_blank=True, help_text="http and sse: an http(s) URL or env.NAME"
    )
    stdio_config = StdioConfigShape(required=False, allow_null=True, help_text="stdio only")
    auth_type = serializers.ChoiceField(choices=AuthType.choices, required=False)
    headers = serializers.DictField(
        child=serializers.CharField(max_length=4096, allow_blank=True),
        required=False,
        help_text="sent to the server; stored encrypted, shown masked (a masked value sent back keeps the stored one)",
    )
    oauth_config = OAuthConfigShape(required=False, allow_null=True)
    tools_to_execute = serializers.ListField(
        child=serializers.CharField(max_length=255),
        required=False,
        help_text='deny by default: ["*"] every tool, [] or absent none, else those tools',
    )
    allowed_extra_headers = serializers.ListField(
        child=serializers.CharField(max_length=128),
        required=False,
        help_text="request headers callers may forward to this server",
    )
    tool_pricing = serializers.DictField(
        child=PriceField(), required=False, help_text="tool name → dollars per call, at most 10 decimals"
    )
    timeout_seconds = serializers.FloatField(min_value=0.1, max_value=600, required=False)
    allow_on_all_virtual_keys = serializers.BooleanField(required=False)
    vk_configs = serializers.ListField(
        child=VkConfigShape(), required=False, help_text="the virtual keys that may use it, and which tools"
    )


class McpClientUpdateInput(McpClientInput):
    """Body of ``PUT /api/mcp/client/{client_id}``: every field optional, absent (or null) = kept;
    ``headers`` replace all headers; ``vk_configs`` replace all the client's VK configs."""

    client_id = None  # the path names the client
    name = serializers.RegexField(NAME_PATTERN, max_length=63, required=False)
    connection_type = serializers.ChoiceField(choices=ConnectionType.choices, required=False)


class McpClientConfigOut(serializers.Serializer):
    client_id = serializers.CharField()
    name = serializers.CharField()
    connection_type = serializers.ChoiceField(choices=ConnectionType.choices)
    connection_string = serializers.CharField(allow_blank=True, help_text="as written (env.NAME is not resolved)")
    stdio_config = StdioConfigShape(allow_null=True)
    auth_type = serializers.ChoiceField(choices=AuthType.choices)
    headers = serializers.DictField(child=serializers.CharField(), help_text="values masked (…abcd)")
    oauth_config = OAuthConfigShape(allow_null=True)
    tools_to_execute = serializers.ListField(child=serializers.CharField())
    allowed_extra_headers = serializers.ListField(child=serializers.CharField())
    tool_pricing = serializers.DictField(child=serializers.FloatField())
    timeout_seconds = serializers.FloatField()
    allow_on_all_virtual_keys = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class McpToolOut(serializers.Serializer):
    name = serializers.CharField(help_text="as the gateway's /mcp offers it: <client name>_<tool>")
    description = serializers.CharField(allow_blank=True)
    parameters = serializers.DictField(help_text="the tool's input JSON schema")


class McpVkConfigOut(serializers.Serializer):
    virtual_key_id = serializers.UUIDField()
    virtual_key_name = serializers.CharField()
    tools_to_execute = serializers.ListField(child=serializers.CharField())


class McpClientOut(serializers.Serializer):
    config = McpClientConfigOut()
    tools = McpToolOut(many=True)
    state = serializers.ChoiceField(choices=mcp_upstream.STATES)
    vk_configs = McpVkConfigOut(many=True)
    error = serializers.CharField(required=False, help_text="why the state is error")


@extend_schema_serializer(many=False)
class McpClientListOut(docs.PageOut):
    clients = McpClientOut(many=True)


class McpStatusOut(serializers.Serializer):
    status = serializers.CharField()
    message = serializers.CharField()


class McpClientMessageOut(McpStatusOut):
    client = McpClientOut()


LIST_PARAMS = docs.PAGE_PARAMS[:3]
CLIENT_ID_PARAM = OpenApiParameter("client_id", str, OpenApiParameter.PATH)
# Reconnect takes no body yet answers 400 when the server cannot be reached (docs.postprocess_schema).
MAY_REFUSE = {docs.MAY_REFUSE: True}


# --- views ---------------------------------------------------------------------------------------

STDIO_SUPERUSER_ONLY = "only a superuser may configure a stdio MCP client: it runs a command on the gateway's hosts"


def _check_stdio_allowed(request: Request, data: dict, client: McpClient | None = None) -> None:
    """A stdio client runs a command on the gateway's hosts: that is a superuser's decision."""
    stdio = data.get("connection_type") == "stdio" or "stdio_config" in data
    if client is not None and client.connection_type == "stdio":
        stdio = True
    if stdio and not request.user.is_superuser:
        raise PermissionDenied(STDIO_SUPERUSER_ONLY)


class McpClientListView(APIView):
    queryset = McpClient.objects.all()

    @extend_schema(operation_id="mcp_clients_list", parameters=LIST_PARAMS, responses={200: McpClientListOut})
    def get(self, request: Request) -> Response:
        queryset = listing.search(_clients(), request.query_params)
        rows, page = listing.paginate(queryset, request.query_params)
        found = mcp_upstream.discover(rows)
        return Response({"clients": [client_json(client, found[client.pk]) for client in rows], **page})


class McpClientCreateView(APIView):
    queryset = McpClient.objects.all()

    @extend_schema(operation_id="mcp_client_create", request=McpClientInput, responses={200: McpClientMessageOut})
    def post(self, request: Request) -> Response:
        data = known_fields(request, ("client_id", *BODY_FIELDS))
        missing = {field: ["This field is required."] for field in REQUIRED if field not in data}
        if missing:
            raise ValidationError(missing)
        _check_stdio_allowed(request, data)
        client = _call(services.mcp_client_create, connector=mcp_upstream.connector(), **data)
        message = (
            "MCP client created successfully"
            if client.auth_type == AuthType.PER_USER_OAUTH
            else "MCP client connected successfully"
        )
        return Response({"status": "success", "message": message, "client": _render_one(client.client_id)})


class McpClientDetailView(APIView):
    queryset = McpClient.objects.all()

    @extend_schema(
        operation_id="mcp_client_update",
        parameters=[CLIENT_ID_PARAM],
        request=McpClientUpdateInput,
        responses={200: McpClientMessageOut},
    )
    def put(self, request: Request, client_id: str) -> Response:
        client = _client_or_404(client_id)
        data = known_fields(request, BODY_FIELDS)
        _check_stdio_allowed(request, data, client)
        _call(services.mcp_client_update, client=client, connector=mcp_upstream.connector(), **data)
        return Response(
            {"status": "success", "message": "MCP client edited successfully", "client": _render_one(client_id)}
        )

    @extend_schema(operation_id="mcp_client_destroy", parameters=[CLIENT_ID_PARAM], responses={200: McpStatusOut})
    def delete(self, request: Request, client_id: str) -> Response:
        services.mcp_client_delete(client=_client_or_404(client_id), connector=_connector_or_none())
        return Response({"status": "success", "message": "MCP client removed successfully"})


class McpClientReconnectView(APIView):
    queryset = McpClient.objects.all()
    # A verb on an existing client: ``StaffModelPermissions`` asks for ``change``, not ``add``.
    action = "reconnect"

    @extend_schema(
        operation_id="mcp_client_reconnect",
        parameters=[CLIENT_ID_PARAM],
        request=None,
        responses={200: McpClientMessageOut},
        extensions=MAY_REFUSE,
    )
    def post(self, request: Request, client_id: str) -> Response:
        client = _client_or_404(client_id)
        services.mcp_client_reconnect(client=client, connector=mcp_upstream.connector())
        return Response(
            {"status": "success", "message": "MCP client reconnected successfully", "client": _render_one(client_id)}
        )
