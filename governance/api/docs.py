"""Response shapes and query parameters for the OpenAPI schema of the governance API.

These serializers document what ``governance.api.representations`` renders; they are not used
to render (the representations are plain functions), so keep the two in step.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

PAGE_PARAMS = [
    OpenApiParameter("limit", int, description="page size, default 25, max 100"),
    OpenApiParameter("offset", int, description="rows to skip"),
    OpenApiParameter("search", str, description="case-insensitive name substring"),
    OpenApiParameter("sort_by", str, enum=["name", "created_at"]),
    OpenApiParameter("order", str, enum=["asc", "desc"]),
]
TEAM_LIST_PARAMS = [*PAGE_PARAMS, OpenApiParameter("customer_id", str)]
VK_LIST_PARAMS = [
    *PAGE_PARAMS[:3],
    OpenApiParameter("sort_by", str, enum=["name", "created_at", "budget_spent", "status"]),
    PAGE_PARAMS[4],
    OpenApiParameter("team_id", str),
    OpenApiParameter("customer_id", str),
]


class OwnerOut(serializers.Serializer):
    type = serializers.CharField(allow_null=True)
    id = serializers.CharField(allow_null=True)


class RefOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class BudgetOut(serializers.Serializer):
    id = serializers.UUIDField()
    max_limit = serializers.FloatField()
    reset_duration = serializers.CharField()
    calendar_aligned = serializers.BooleanField()
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


class MessageOut(serializers.Serializer):
    message = serializers.CharField()


class PageOut(serializers.Serializer):
    count = serializers.IntegerField()
    total_count = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()


def _wrap(name: str, key: str, inner, *, many: bool = False, message: bool = False, page: bool = False):
    fields = {key: inner(many=many)}
    if message:
        fields["message"] = serializers.CharField()
    base = PageOut if page else serializers.Serializer
    return type(name, (base,), fields)


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


class BudgetListOut(serializers.Serializer):
    budgets = BudgetOut(many=True)
    count = serializers.IntegerField()


class RateLimitListOut(serializers.Serializer):
    rate_limits = RateLimitOut(many=True)
    count = serializers.IntegerField()
