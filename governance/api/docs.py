"""Response shapes and query parameters for the OpenAPI schema of the governance API.

These serializers document what ``governance.api.representations`` renders; they are not used
to render (the representations are plain functions), so keep the two in step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema_serializer
from rest_framework import serializers

if TYPE_CHECKING:
    from drf_spectacular.generators import SchemaGenerator
    from rest_framework.request import Request

# The bounds ``governance.api.listing`` enforces: at most nine digits, a limit of at least 1.
_COUNT = {"type": "integer", "maximum": 999_999_999}
PAGE_PARAMS = [
    OpenApiParameter("limit", {**_COUNT, "minimum": 1}, description="page size, default 25, values over 100 mean 100"),
    OpenApiParameter("offset", {**_COUNT, "minimum": 0}, description="rows to skip"),
    OpenApiParameter("search", {"type": "string", "maxLength": 255}, description="case-insensitive name substring"),
    OpenApiParameter("sort_by", str, enum=["name", "created_at"]),
    OpenApiParameter("order", str, enum=["asc", "desc"]),
]
TEAM_LIST_PARAMS = [*PAGE_PARAMS, OpenApiParameter("customer_id", OpenApiTypes.UUID)]
VK_LIST_PARAMS = [
    *PAGE_PARAMS[:3],
    OpenApiParameter("sort_by", str, enum=["name", "created_at", "budget_spent", "status"]),
    PAGE_PARAMS[4],
    OpenApiParameter("team_id", OpenApiTypes.UUID),
    OpenApiParameter("customer_id", OpenApiTypes.UUID),
]
MODEL_CONFIG_LIST_PARAMS = [
    *PAGE_PARAMS[:2],
    OpenApiParameter(
        "search", {"type": "string", "maxLength": 255}, description="case-insensitive model_name substring"
    ),
    OpenApiParameter("sort_by", str, enum=["model_name", "created_at"]),
    PAGE_PARAMS[4],
]
# Ids in paths are UUIDs; anything else is answered 404 like an unknown id.
ID_PARAM = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH)


class OwnerOut(serializers.Serializer):
    type = serializers.CharField(
        allow_null=True,
        help_text="virtual_key, provider_config, team, customer, model_config or provider",
    )
    id = serializers.CharField(allow_null=True)


class RefOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class BudgetOut(serializers.Serializer):
    id = serializers.UUIDField()
    max_limit = serializers.FloatField()
    reset_duration = serializers.CharField()
    calendar_aligned = serializers.BooleanField()
    alert_thresholds = serializers.ListField(
        child=serializers.IntegerField(), help_text="percents of max_limit that send a budget alert; [] none"
    )
    current_usage = serializers.FloatField()
    last_reset = serializers.DateTimeField(allow_null=True)
    resets_at = serializers.DateTimeField(allow_null=True)
    owner = OwnerOut()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class RateLimitOut(serializers.Serializer):
    id = serializers.UUIDField()
    token_max_limit = serializers.IntegerField(allow_null=True)
    token_reset_duration = serializers.CharField(allow_null=True)
    token_current_usage = serializers.IntegerField()
    token_last_reset = serializers.DateTimeField(allow_null=True)
    request_max_limit = serializers.IntegerField(allow_null=True)
    request_reset_duration = serializers.CharField(allow_null=True)
    request_current_usage = serializers.IntegerField()
    request_last_reset = serializers.DateTimeField(allow_null=True)
    owner = OwnerOut()


class KeyRefOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class ProviderConfigOut(serializers.Serializer):
    id = serializers.IntegerField()
    provider = serializers.CharField()
    weight = serializers.FloatField(allow_null=True)
    allowed_models = serializers.ListField(child=serializers.CharField())
    key_ids = serializers.ListField(child=serializers.CharField())
    keys = KeyRefOut(many=True)
    budgets = BudgetOut(many=True)
    rate_limit = RateLimitOut(allow_null=True)


class McpConfigOut(serializers.Serializer):
    id = serializers.IntegerField()
    mcp_client_name = serializers.CharField()
    tools_to_execute = serializers.ListField(child=serializers.CharField())


class VirtualKeyOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    value = serializers.CharField(help_text="masked (sk-bf-…abcd) except in create and rotate responses")
    is_active = serializers.BooleanField()
    team_id = serializers.UUIDField(allow_null=True)
    customer_id = serializers.UUIDField(allow_null=True)
    team = RefOut(allow_null=True)
    customer = RefOut(allow_null=True)
    budgets = BudgetOut(many=True)
    rate_limit = RateLimitOut(allow_null=True)
    provider_configs = ProviderConfigOut(many=True)
    mcp_configs = McpConfigOut(many=True)
    allow_all_providers = serializers.BooleanField()
    log_content = serializers.BooleanField()
    expires_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class TeamOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    customer_id = serializers.UUIDField(allow_null=True)
    customer = RefOut(allow_null=True)
    budgets = BudgetOut(many=True)
    rate_limit = RateLimitOut(allow_null=True)
    profile = serializers.DictField()
    config = serializers.DictField()
    claims = serializers.DictField()
    virtual_key_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class CustomerOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    budgets = BudgetOut(many=True)
    budget = BudgetOut(allow_null=True)
    rate_limit = RateLimitOut(allow_null=True)
    teams = RefOut(many=True)
    virtual_key_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ModelConfigOut(serializers.Serializer):
    id = serializers.UUIDField()
    model_name = serializers.CharField(help_text="the model as the provider is asked for it")
    provider = serializers.CharField(allow_null=True, help_text="null: the model on every provider")
    budgets = BudgetOut(many=True)
    budget = BudgetOut(allow_null=True, help_text="Bifrost's single budget: the first of budgets")
    rate_limit = RateLimitOut(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ProviderGovernanceOut(serializers.Serializer):
    id = serializers.UUIDField(help_text="the provider's id")
    provider = serializers.CharField()
    budgets = BudgetOut(many=True)
    budget = BudgetOut(allow_null=True, help_text="Bifrost's single budget: the first of budgets")
    rate_limit = RateLimitOut(allow_null=True)


class MessageOut(serializers.Serializer):
    message = serializers.CharField()


class PageOut(serializers.Serializer):
    count = serializers.IntegerField()
    total_count = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()


def _wrap(
    name: str,
    key: str,
    inner: type[serializers.Serializer],
    *,
    many: bool = False,
    message: bool = False,
    page: bool = False,
) -> type[serializers.Serializer]:
    fields: dict[str, serializers.Field] = {key: inner(many=many)}
    if message:
        fields["message"] = serializers.CharField()
    base = PageOut if page else serializers.Serializer
    # A list action answers one envelope object, not an array of them (drf-spectacular's guess).
    return extend_schema_serializer(many=False)(type(name, (base,), fields))


VirtualKeyListOut = _wrap("VirtualKeyList", "virtual_keys", VirtualKeyOut, many=True, page=True)
VirtualKeyOneOut = _wrap("VirtualKeyOne", "virtual_key", VirtualKeyOut)
VirtualKeyMessageOut = _wrap("VirtualKeyMessage", "virtual_key", VirtualKeyOut, message=True)
TeamListOut = _wrap("TeamList", "teams", TeamOut, many=True, page=True)
TeamOneOut = _wrap("TeamOne", "team", TeamOut)
TeamMessageOut = _wrap("TeamMessage", "team", TeamOut, message=True)
CustomerListOut = _wrap("CustomerList", "customers", CustomerOut, many=True, page=True)
CustomerOneOut = _wrap("CustomerOne", "customer", CustomerOut)
CustomerMessageOut = _wrap("CustomerMessage", "customer", CustomerOut, message=True)
BudgetMessageOut = _wrap("BudgetMessage", "budget", BudgetOut, message=True)
ModelConfigListOut = _wrap("ModelConfigList", "model_configs", ModelConfigOut, many=True, page=True)
ModelConfigOneOut = _wrap("ModelConfigOne", "model_config", ModelConfigOut)
ModelConfigMessageOut = _wrap("ModelConfigMessage", "model_config", ModelConfigOut, message=True)
ProviderGovernanceOneOut = _wrap("ProviderGovernanceOne", "provider", ProviderGovernanceOut)
ProviderGovernanceMessageOut = _wrap("ProviderGovernanceMessage", "provider", ProviderGovernanceOut, message=True)


@extend_schema_serializer(many=False)
class ProviderGovernanceListOut(serializers.Serializer):
    providers = ProviderGovernanceOut(many=True)
    count = serializers.IntegerField()


@extend_schema_serializer(many=False)
class BudgetListOut(serializers.Serializer):
    budgets = BudgetOut(many=True)
    count = serializers.IntegerField()


@extend_schema_serializer(many=False)
class RateLimitListOut(serializers.Serializer):
    rate_limits = RateLimitOut(many=True)
    count = serializers.IntegerField()


class QuotaProviderConfigOut(serializers.Serializer):
    provider = serializers.CharField()
    allowed_models = serializers.ListField(child=serializers.CharField())
    budgets = BudgetOut(many=True)
    rate_limit = RateLimitOut(allow_null=True)


class QuotaEntityOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    budgets = BudgetOut(many=True)
    rate_limit = RateLimitOut(allow_null=True)


class QuotaOut(serializers.Serializer):
    """Bifrost v1.5's quota response at the top level, the limits that also cap the key beside it."""

    virtual_key_name = serializers.CharField(help_text="Bifrost v1.5 field")
    is_active = serializers.BooleanField(help_text="Bifrost v1.5 field; false when the key is deactivated or expired")
    budgets = BudgetOut(many=True, help_text="Bifrost v1.5 field: the key's own budgets, live usage")
    rate_limit = RateLimitOut(allow_null=True, help_text="Bifrost v1.5 field: the key's own rate limit, or null")
    virtual_key_id = serializers.UUIDField()
    virtual_key_value = serializers.CharField(help_text="masked (sk-bf-…abcd)")
    expires_at = serializers.DateTimeField(allow_null=True)
    provider_configs = QuotaProviderConfigOut(many=True)
    team = QuotaEntityOut(allow_null=True, help_text="the key's team: its budgets and rate limit also cap the key")
    customer = QuotaEntityOut(allow_null=True, help_text="the key's own customer, or its team's")
    provider_governance = ProviderGovernanceOut(
        many=True, help_text="the governance of each provider the key may use: it caps all traffic to that provider"
    )
    model_configs = ModelConfigOut(
        many=True, help_text="the model configs on the key's paths: each caps all traffic for its model"
    )


# The one error body (``bifrost_site.errors.error_body``), declared on every operation by the
# postprocessing hook below rather than on each view, so no operation can miss it.
ERROR_SCHEMA = {
    "type": "object",
    "description": "The error body of every JSON surface (Bifrost's shape).",
    "properties": {
        "is_bifrost_error": {"type": "boolean"},
        "status_code": {"type": "integer", "description": "the HTTP status, repeated"},
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string", "description": "what is wrong, naming the field or the id"},
                "details": {"description": "field errors, keyed like the request body"},
            },
            "required": ["message"],
        },
        "extra_fields": {"type": "object", "additionalProperties": {}},
        "type": {"type": "string", "description": "machine-readable reason, on virtual key errors only"},
    },
    "required": ["is_bifrost_error", "status_code", "error", "extra_fields"],
}
ERROR_DESCRIPTIONS = {
    400: "invalid input (malformed JSON, a bad field or query parameter); the message names the problem",
    401: "missing or invalid credentials",
    403: "the authenticated user lacks the model permission for this method",
    404: "no object with this id or name",
    409: "the write conflicts with the current state (a concurrent change, or rows still using the object)",
    413: "request body too large",
}
VIRTUAL_KEY_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "x-bf-vk",
    "description": "a virtual key; also accepted as `Authorization: Bearer sk-bf-…`, `x-api-key` or `x-goog-api-key`",
}
VIRTUAL_KEY_AUTH: list[dict[str, list[str]]] = [{"virtualKey": []}]
_WRITES = frozenset({"post", "put", "patch", "delete"})
# An operation extension (``extend_schema(extensions={MAY_REFUSE: True})``) for an operation
# without a body or query parameters that can still answer 400 (MCP client reconnect); removed
# from the published document once its 400 is declared.
MAY_REFUSE = "x-bifrost-may-refuse"


def error_statuses(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    """The error statuses an operation can answer, from what it accepts and how it authenticates."""
    statuses: list[int] = []
    parameters = operation.get("parameters", [])
    refuses = operation.pop(MAY_REFUSE, False)
    if refuses or "requestBody" in operation or any(p.get("in") == "query" for p in parameters):
        statuses.append(400)
    if operation.get("security") == VIRTUAL_KEY_AUTH:
        statuses.append(401)
    elif operation.get("security"):
        statuses += [401, 403]
        if method in _WRITES:
            statuses.append(409)
    if "{" in path:
        statuses.append(404)
    if "requestBody" in operation:
        statuses.append(413)
    return sorted(statuses)


def postprocess_schema(
    result: dict[str, Any], generator: SchemaGenerator, request: Request | None, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: error responses, the virtual key scheme, empty query values."""
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    components.setdefault("securitySchemes", {})["virtualKey"] = VIRTUAL_KEY_SCHEME
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            for status in error_statuses(path, method, operation):
                responses.setdefault(str(status), {"description": ERROR_DESCRIPTIONS[status], "content": error})
            if path.startswith("/api/governance/"):
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "query":
                        # ``governance.api.listing`` reads ``?offset=`` as no offset, and so on.
                        parameter["allowEmptyValue"] = True
    return result
