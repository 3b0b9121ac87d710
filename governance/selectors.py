"""Reads that join or filter; writes live in ``governance.services``."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import DecimalField, Prefetch, QuerySet, Sum, Value
from django.db.models.functions import Coalesce

from governance.keys import digest
from governance.models import ApiToken, Budget, ProviderConfig, VirtualKey


def api_token_user(token: str) -> tuple[User, ApiToken] | None:
    """``(user, token_row)`` for a valid admin API token, else None (unknown and wrong look alike)."""
    row = ApiToken.objects.select_related("user").filter(token_digest=digest(token)).first()
    return (row.user, row) if row else None


def virtual_key_by_value(value: str) -> VirtualKey | None:
    """Look a key up by its secret value (via the digest; the value itself is never stored)."""
    return VirtualKey.objects.filter(value_digest=digest(value)).first()


def virtual_key_list() -> QuerySet[VirtualKey]:
    """Virtual keys with everything the API renders, in a fixed number of queries."""
    return (
        VirtualKey.objects.select_related("team", "customer", "rate_limit")
        .prefetch_related(
            "budgets",
            Prefetch(
                "provider_configs",
                queryset=ProviderConfig.objects.select_related("provider", "rate_limit").prefetch_related(
                    "budgets", "keys"
                ),
            ),
            "mcp_configs__mcp_client",
        )
        .annotate(
            budget_spent=Coalesce(
                Sum("budgets__current_usage"), Value(0), output_field=DecimalField(max_digits=24, decimal_places=10)
            )
        )
    )


def budgets_with_owner() -> QuerySet[Budget]:
    return Budget.objects.select_related(
        "virtual_key", "team", "customer", "provider_config__provider", "model_config__provider", "provider"
    )
