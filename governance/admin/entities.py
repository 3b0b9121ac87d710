"""Customers and teams, with their budgets and rate limit inline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from governance.admin.common import GovernanceModelAdmin, Services, budget_bars, rate_limit_bars, related_rate_limit
from governance.admin.inlines import BudgetInline, LimitsOwnerAdminMixin, RateLimitInline
from governance.admin.virtual_keys import reset_budgets
from governance.dashboard.entity import UsagePanelMixin
from governance.models import Budget, Customer, Team
from governance.services import customer_create, customer_delete, customer_update, team_create, team_delete, team_update

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class _KeyCount(TypedDict):
    key_count: int


class _CustomerCounts(_KeyCount):
    team_count: int


def _keys_link(count: int, filter_field: str, pk: Any) -> str:
    url = reverse("admin:governance_virtualkey_changelist") + f"?{filter_field}__id__exact={pk}"
    return format_html('<a href="{}">{}</a>', url, count)


class _OwnerDisplays:
    """Columns shared by the customer and team lists (budgets and rate limit already fetched)."""

    @admin.display(description="budgets (spent / limit)")
    def budgets_used(self, owner: Customer | Team) -> str:
        return budget_bars(owner.budgets.all())

    @admin.display(description="rate limit")
    def rate_limit_used(self, owner: Customer | Team) -> str:
        return rate_limit_bars(related_rate_limit(owner))


@admin.register(Customer)
class CustomerAdmin(
    UsagePanelMixin[Customer], LimitsOwnerAdminMixin[Customer], _OwnerDisplays, GovernanceModelAdmin[Customer]
):
    usage_field = "customer"
    change_form_template = "admin/governance/usage_change_form.html"
    list_display = ["name", "teams", "keys", "budgets_used", "rate_limit_used", "created_at"]
    search_fields = ["name"]
    list_select_related = ["rate_limit"]
    fields = ["name", "created_at", "updated_at"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [BudgetInline, RateLimitInline]
    actions = ["reset_budget_usage"]
    services = Services(create=customer_create, update=customer_update, delete=customer_delete, instance="customer")
    service_fields = ("name",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Customer]:
        return (
            super()
            .get_queryset(request)
            .prefetch_related("budgets")
            .annotate(team_count=Count("teams", distinct=True), key_count=Count("virtual_keys", distinct=True))
        )

    @admin.display(description="teams", ordering="team_count")
    def teams(self, customer: WithAnnotations[Customer, _CustomerCounts]) -> str:
        url = reverse("admin:governance_team_changelist") + f"?customer__id__exact={customer.pk}"
        return format_html('<a href="{}">{}</a>', url, customer.team_count)

    @admin.display(description="virtual keys", ordering="key_count")
    def keys(self, customer: WithAnnotations[Customer, _CustomerCounts]) -> str:
        return _keys_link(customer.key_count, "customer", customer.pk)

    @admin.action(description="Reset budget usage of selected customers", permissions=["change"])
    def reset_budget_usage(self, request: HttpRequest, queryset: QuerySet[Customer]) -> None:
        reset_budgets(self, request, Budget.objects.filter(customer__in=queryset))


@admin.register(Team)
class TeamAdmin(UsagePanelMixin[Team], LimitsOwnerAdminMixin[Team], _OwnerDisplays, GovernanceModelAdmin[Team]):
    usage_field = "team"
    change_form_template = "admin/governance/usage_change_form.html"
    list_display = ["name", "customer", "keys", "budgets_used", "rate_limit_used", "created_at"]
    list_filter = ["customer"]
    search_fields = ["name", "customer__name"]
    list_select_related = ["customer", "rate_limit"]
    autocomplete_fields = ["customer"]
    fieldsets = [
        (None, {"fields": ["name", "customer"]}),
        ("Free-form data", {"fields": ["profile", "config", "claims"], "classes": ["collapse"]}),
        ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [BudgetInline, RateLimitInline]
    actions = ["reset_budget_usage"]
    services = Services(create=team_create, update=team_update, delete=team_delete, instance="team")
    service_fields = ("name", "customer", "profile", "config", "claims")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        return (
            super()
            .get_queryset(request)
            .prefetch_related("budgets")
            .annotate(key_count=Count("virtual_keys", distinct=True))
        )

    @admin.display(description="virtual keys", ordering="key_count")
    def keys(self, team: WithAnnotations[Team, _KeyCount]) -> str:
        return _keys_link(team.key_count, "team", team.pk)

    @admin.action(description="Reset budget usage of selected teams", permissions=["change"])
    def reset_budget_usage(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        reset_budgets(self, request, Budget.objects.filter(team__in=queryset))
