"""Providers (with their governance: budgets and rate limit on all traffic to them, inline),
provider keys (values write-only and masked), VK provider configs, model prices."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from governance.admin.common import (
    GovernanceModelAdmin,
    ServiceAdminMixin,
    Services,
    budget_bars,
    rate_limit_bars,
    related_rate_limit,
)
from governance.admin.inlines import BudgetInline, LimitsOwnerAdminMixin, RateLimitInline
from governance.forms import ProviderAdminForm, ProviderConfigInlineForm, ProviderKeyAdminForm
from governance.models import ModelPrice, Provider, ProviderConfig, ProviderKey
from governance.provider_check import check_key
from governance.services import (
    provider_create,
    provider_delete,
    provider_key_create,
    provider_key_delete,
    provider_key_update,
    provider_update,
)
from governance.services.virtual_keys import provider_configs_reconcile

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldGroups
    from django_stubs_ext import WithAnnotations

    from governance.admin.inlines import InlineFormSet

PER_MILLION = 1_000_000


class _KeyCount(TypedDict):
    key_count: int


class ProviderBudgetInline(BudgetInline):
    verbose_name_plural = (
        "provider budgets: all traffic to this provider, with or without a virtual key (one per reset duration)"
    )


class ProviderRateLimitInline(RateLimitInline):
    verbose_name_plural = "provider rate limit: all traffic to this provider"


@admin.register(Provider)
class ProviderAdmin(LimitsOwnerAdminMixin[Provider], GovernanceModelAdmin[Provider]):
    form = ProviderAdminForm
    list_display = [
        "name",
        "provider_type",
        "effective_url",
        "timeout_seconds",
        "keys",
        "budgets_used",
        "rate_limit_used",
    ]
    list_filter = ["provider_type"]
    search_fields = ["name", "base_url"]
    list_select_related = ["rate_limit"]
    inlines = [ProviderBudgetInline, ProviderRateLimitInline]
    services = Services(create=provider_create, update=provider_update, delete=provider_delete, instance="provider")
    service_fields = ("base_url", "provider_type", "timeout_seconds", "extra_headers")
    create_fields = ("name",)  # read-only once created

    def get_queryset(self, request: HttpRequest) -> QuerySet[Provider]:
        return super().get_queryset(request).annotate(key_count=Count("keys")).prefetch_related("budgets")

    @admin.display(description="budgets (spent / limit)")
    def budgets_used(self, provider: Provider) -> str:
        return budget_bars(provider.budgets.all())

    @admin.display(description="rate limit")
    def rate_limit_used(self, provider: Provider) -> str:
        return rate_limit_bars(related_rate_limit(provider))

    fields = ["name", "provider_type", "base_url", "timeout_seconds", "extra_headers"]

    def get_readonly_fields(self, request: HttpRequest, obj: Provider | None = None) -> list[str]:
        # The name is how VKs, routing and the API refer to the provider: fixed after creation.
        return ["name"] if obj else []

    @admin.display(description="base URL", ordering="base_url")
    def effective_url(self, provider: Provider) -> str:
        if provider.base_url:
            return provider.base_url
        if provider.effective_base_url:
            return format_html('{} <span class="quiet">(default)</span>', provider.effective_base_url)
        return format_html('<span class="quiet">{}</span>', "each key's endpoint")

    @admin.display(description="keys", ordering="key_count")
    def keys(self, provider: WithAnnotations[Provider, _KeyCount]) -> str:
        url = reverse("admin:governance_providerkey_changelist") + f"?provider__id__exact={provider.pk}"
        return format_html('<a href="{}">{}</a>', url, provider.key_count)

    # --- the provider's keys on its page, each with a connection test ------------------------

    change_form_template = "admin/governance/provider/change_form.html"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        provider = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if provider is not None:
            extra_context["provider_keys"] = [
                {
                    "key": key,
                    "models": ", ".join(key.models) if key.models else "any",
                    "change_url": reverse("admin:governance_providerkey_change", args=[key.pk]),
                    "test_url": reverse("admin:governance_provider_test_key", args=[provider.pk, key.pk]),
                }
                for key in provider.keys.order_by("name")
            ]
            extra_context["add_key_url"] = reverse("admin:governance_providerkey_add") + f"?provider={provider.pk}"
            extra_context["can_test_keys"] = _can_test(request)
            extra_context["can_add_key"] = request.user.has_perm("governance.add_providerkey")
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[URLPattern]:
        test = self.admin_site.admin_view(require_POST(self.test_key_view))
        return [
            path("<uuid:provider_id>/keys/<uuid:key_id>/test/", test, name="governance_provider_test_key"),
            *super().get_urls(),
        ]

    def test_key_view(self, request: HttpRequest, provider_id: uuid.UUID, key_id: uuid.UUID) -> HttpResponse:
        """POST: test one key's connection, say how it went, back to the provider's page."""
        if not _can_test(request):
            raise PermissionDenied
        key = get_object_or_404(ProviderKey.objects.select_related("provider"), pk=key_id, provider_id=provider_id)
        report_check(request, key)
        return HttpResponseRedirect(reverse("admin:governance_provider_change", args=[provider_id]))


@admin.register(ProviderKey)
class ProviderKeyAdmin(ServiceAdminMixin[ProviderKey], GovernanceModelAdmin[ProviderKey]):
    form = ProviderKeyAdminForm
    list_display = ["name", "provider", "masked", "model_list", "weight", "enabled"]
    list_filter = ["provider", "enabled"]
    search_fields = ["name", "provider__name"]
    list_select_related = ["provider"]
    services = Services(
        create=provider_key_create, update=provider_key_update, delete=provider_key_delete, instance="key"
    )
    service_fields = ("name", "models", "weight", "enabled", "azure_key_config")
    create_fields = ("provider",)  # read-only once created
    actions = ["test_connection"]

    def get_readonly_fields(self, request: HttpRequest, obj: ProviderKey | None = None) -> list[str]:
        return ["provider", "masked"] if obj else []

    def get_fields(self, request: HttpRequest, obj: ProviderKey | None = None) -> _FieldGroups:
        shown = ("provider", "name", "masked", "value", "models", "weight", "enabled", "azure_key_config")
        return [field for field in shown if obj or field != "masked"]

    @admin.display(description="value")
    def masked(self, key: ProviderKey) -> str:
        return format_html('<code class="gov-masked">{}</code>', key.masked_value or "—")

    @admin.display(description="models")
    def model_list(self, key: ProviderKey) -> str:
        return ", ".join(key.models) if key.models else "any"

    def service_data(self, form: forms.ModelForm[ProviderKey], change: bool) -> dict[str, Any]:
        # The value is write-only: left blank on a change, the stored one is kept.
        return super().service_data(form, change) | {"value": form.cleaned_data.get("value") or None}

    @admin.action(description="Test connection (list the upstream's models with each key)", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[ProviderKey]) -> None:
        for key in queryset.select_related("provider").order_by("provider__name", "name")[:MAX_TESTED]:
            report_check(request, key)
        if queryset.count() > MAX_TESTED:
            self.message_user(request, f"Only the first {MAX_TESTED} keys were tested.", messages.WARNING)


# Each test may wait up to its timeout: one page of keys at most, so the page answers in time.
MAX_TESTED = 10


def _can_test(request: HttpRequest) -> bool:
    # The test sends the stored key upstream: for those who may change keys, not only view them.
    return request.user.has_perm("governance.change_providerkey")


def report_check(request: HttpRequest, key: ProviderKey) -> None:
    """Run the connection test of ``key`` and show its result as an admin message."""
    result = check_key(key=key)
    text = f"Connection test of {key.provider.name} / {key.name}: {result.message}"
    messages.add_message(request, messages.SUCCESS if result.ok else messages.ERROR, text)


def _provider_config_delete(config: ProviderConfig) -> None:
    """Its key's list reconciled without it; the others, passed by id only, stay as they are."""
    specs = [
        {"id": c.pk, "provider": c.provider.name}
        for c in ProviderConfig.objects.filter(virtual_key_id=config.virtual_key_id)
        .exclude(pk=config.pk)
        .select_related("provider")
    ]
    provider_configs_reconcile(vk=config.virtual_key, configs=specs)


@admin.register(ProviderConfig)
class ProviderConfigAdmin(LimitsOwnerAdminMixin[ProviderConfig], GovernanceModelAdmin[ProviderConfig]):
    """A VK's provider config with its own budgets and rate limit (created from the VK page)."""

    form = ProviderConfigInlineForm
    list_display = ["__str__", "virtual_key", "weight", "models", "budgets_used", "rate_limit_used"]
    list_filter = ["provider"]
    search_fields = ["virtual_key__name", "provider__name"]
    list_select_related = ["virtual_key", "provider", "rate_limit"]
    readonly_fields = ["virtual_key", "provider"]
    fields = ["virtual_key", "provider", "weight", "allowed_models", "allow_all_keys", "keys"]
    inlines = [BudgetInline, RateLimitInline]
    services = Services(delete=_provider_config_delete, instance="config")  # saved by ``save_model`` below

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProviderConfig]:
        return super().get_queryset(request).prefetch_related("budgets")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # added on the virtual key's page, where the provider is chosen

    @admin.display(description="allowed models")
    def models(self, config: ProviderConfig) -> str:
        return ", ".join(config.allowed_models) or "none"

    @admin.display(description="budgets (spent / limit)")
    def budgets_used(self, config: ProviderConfig) -> str:
        return budget_bars(config.budgets.all())

    @admin.display(description="rate limit")
    def rate_limit_used(self, config: ProviderConfig) -> str:
        return rate_limit_bars(related_rate_limit(config))

    def save_model(
        self, request: HttpRequest, obj: ProviderConfig, form: forms.ModelForm[ProviderConfig], change: bool
    ) -> None:
        # The service reconciles a key's whole list; the other configs are passed by id only,
        # which leaves them exactly as they are.
        data = form.cleaned_data
        specs: list[dict[str, Any]] = []
        for config in ProviderConfig.objects.filter(virtual_key_id=obj.virtual_key_id).select_related("provider"):
            spec: dict[str, Any] = {"id": config.pk, "provider": config.provider.name}
            if config.pk == obj.pk:
                spec |= {
                    "weight": data.get("weight"),
                    "allowed_models": data.get("allowed_models", []),
                    "key_ids": ["*"] if data.get("allow_all_keys") else [str(k.pk) for k in data.get("keys") or []],
                }
            specs.append(spec)
        self.run_service(provider_configs_reconcile, vk=obj.virtual_key, configs=specs)
        obj.refresh_from_db()

    def save_related(
        self,
        request: HttpRequest,
        form: forms.ModelForm[ProviderConfig],
        formsets: list[InlineFormSet],
        change: bool,
    ) -> None:
        # ``keys`` was saved by the service; only the budget and rate-limit inlines remain.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ProviderConfig]) -> None:
        super().delete_queryset(request, queryset.select_related("virtual_key"))


@admin.register(ModelPrice)
class ModelPriceAdmin(GovernanceModelAdmin[ModelPrice]):
    """Prices are plain reference data (no invariants beyond the model's), edited as rows."""

    list_display = ["provider", "model", "input_per_million", "output_per_million", "cached_per_million", "updated_at"]
    list_filter = ["provider"]
    search_fields = ["provider", "model"]

    @admin.display(description="input $/1M tokens", ordering="input_cost_per_token")
    def input_per_million(self, price: ModelPrice) -> str:
        return _per_million(price.input_cost_per_token)

    @admin.display(description="output $/1M tokens", ordering="output_cost_per_token")
    def output_per_million(self, price: ModelPrice) -> str:
        return _per_million(price.output_cost_per_token)

    @admin.display(description="cached input $/1M tokens")
    def cached_per_million(self, price: ModelPrice) -> str:
        return _per_million(price.cached_input_cost_per_token)


def _per_million(value: Decimal | None) -> str:
    if value is None:
        return "—"
    return f"{(value * PER_MILLION).normalize():f}"
