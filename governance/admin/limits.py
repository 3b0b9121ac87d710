"""Overview lists of every budget and rate limit, with links to the owner that edits them.

Budgets and rate limits are edited inline on their owner's page (VK, team, customer, provider
config, model config, provider), so these pages are read-only apart from the reset-usage action and deletion (which goes
through the owner's services, and which the owner's own deletion needs to be allowed).
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from governance.admin.common import (
    GovernanceModelAdmin,
    LimitOwner,
    ServiceAdminMixin,
    Services,
    budget_bars,
    rate_limit_bars,
)
from governance.admin.virtual_keys import reset_budgets
from governance.models import Budget, RateLimit
from governance.services import budgets_reconcile, rate_limit_apply

OWNER_LABELS = (
    ("virtual_key", "virtual key"),
    ("team", "team"),
    ("customer", "customer"),
    ("provider_config", "provider config"),
    ("model_config", "model config"),
    ("provider", "provider"),
)

LimitRowT = TypeVar("LimitRowT", Budget, RateLimit)

# Shown and read-only alike on the overview pages.
BUDGET_FIELDS = (
    "owner",
    "max_limit",
    "reset_duration",
    "calendar_aligned",
    "alert_thresholds",
    "current_usage",
    "usage",
    "last_reset",
)
RATE_LIMIT_FIELDS = (
    "owner",
    "token_max_limit",
    "token_reset_duration",
    "token_current_usage",
    "request_max_limit",
    "request_reset_duration",
    "request_current_usage",
    "usage",
)


class OwnerKindFilter(admin.SimpleListFilter):
    title = "owner"
    parameter_name = "owner"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> tuple[tuple[str, str], ...]:
        return OWNER_LABELS

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Budget] | QuerySet[RateLimit]
    ) -> QuerySet[Budget] | QuerySet[RateLimit]:
        if self.value() in dict(OWNER_LABELS):
            return queryset.filter(**{f"{self.value()}__isnull": False})
        return queryset


def owner_of(row: Budget | RateLimit) -> LimitOwner:
    """The VK, team, customer, provider config, model config or provider a budget or rate limit belongs to."""
    return next(getattr(row, field) for field, _ in OWNER_LABELS if getattr(row, f"{field}_id") is not None)


def owner_link(row: Budget | RateLimit) -> str:
    for field, label in OWNER_LABELS:
        owner = getattr(row, field)
        if owner is not None:
            url = reverse(f"admin:governance_{owner._meta.model_name}_change", args=[owner.pk])
            return format_html('{} <a href="{}">{}</a>', label, url, owner)
    return "—"


def _budget_delete(budget: Budget) -> None:
    # Removing one budget is reconciling the owner's list without it (usage of the rest kept).
    owner = owner_of(budget)
    remaining = [
        {"max_limit": b.max_limit, "reset_duration": b.reset_duration, "calendar_aligned": b.calendar_aligned}
        for b in owner.budgets.exclude(pk=budget.pk)
    ]
    budgets_reconcile(owner=owner, budgets=remaining)


def _rate_limit_delete(rate_limit: RateLimit) -> None:
    rate_limit_apply(owner=owner_of(rate_limit), spec={})


class _ReadOnlyOverview(ServiceAdminMixin[LimitRowT], GovernanceModelAdmin[LimitRowT]):
    list_select_related = [
        "virtual_key",
        "team",
        "customer",
        "provider_config__provider",
        "model_config__provider",
        "provider",
    ]
    list_filter = [OwnerKindFilter]
    search_fields = [
        "virtual_key__name",
        "team__name",
        "customer__name",
        "provider_config__provider__name",
        "model_config__model_name",
        "provider__name",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LimitRowT | None = None) -> bool:
        return False

    @admin.display(description="owner")
    def owner(self, row: LimitRowT) -> str:
        return owner_link(row)


@admin.register(Budget)
class BudgetAdmin(_ReadOnlyOverview[Budget]):
    list_display = ["owner", "reset_duration", "calendar_aligned", "usage", "last_reset"]
    list_filter = [OwnerKindFilter, "reset_duration", "calendar_aligned"]
    fields = BUDGET_FIELDS
    readonly_fields = BUDGET_FIELDS
    ordering = ["-current_usage"]
    actions = ["reset_usage"]
    services = Services(delete=_budget_delete, instance="budget")

    def limits_of(self, row: Budget) -> tuple[list[Budget], list[RateLimit]]:
        return [row], []

    @admin.display(description="spent / limit", ordering="current_usage")
    def usage(self, budget: Budget) -> str:
        return budget_bars([budget])

    def has_reset_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("governance.change_budget")

    @admin.action(description="Reset usage of selected budgets", permissions=["reset"])
    def reset_usage(self, request: HttpRequest, queryset: QuerySet[Budget]) -> None:
        reset_budgets(self, request, queryset)


@admin.register(RateLimit)
class RateLimitAdmin(_ReadOnlyOverview[RateLimit]):
    list_display = ["owner", "usage", "token_last_reset", "request_last_reset"]
    fields = RATE_LIMIT_FIELDS
    readonly_fields = RATE_LIMIT_FIELDS
    services = Services(delete=_rate_limit_delete, instance="rate_limit")

    def limits_of(self, row: RateLimit) -> tuple[list[Budget], list[RateLimit]]:
        return [], [row]

    @admin.display(description="use")
    def usage(self, rate_limit: RateLimit) -> str:
        return rate_limit_bars(rate_limit)
