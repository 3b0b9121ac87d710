"""Model configs: limits on all traffic for one model, with their budgets and rate limit inline
and live usage bars on the list (provider governance is inline on the provider's page)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from governance.admin.common import GovernanceModelAdmin, Services, budget_bars, rate_limit_bars, related_rate_limit
from governance.admin.inlines import BudgetInline, LimitsOwnerAdminMixin, RateLimitInline
from governance.models import ModelConfig
from governance.services import model_config_create, model_config_delete, model_config_update


class ModelConfigAdminForm(forms.ModelForm):
    class Meta:
        model = ModelConfig
        fields = ["model_name", "provider"]
        help_texts = {
            "model_name": "The model as the provider is asked for it (gpt-4o, not openai/gpt-4o).",
            "provider": "Blank: the model on every provider. A config for the model on one provider and one "
            "for every provider both apply.",
        }


@admin.register(ModelConfig)
class ModelConfigAdmin(LimitsOwnerAdminMixin[ModelConfig], GovernanceModelAdmin[ModelConfig]):
    form = ModelConfigAdminForm
    list_display = ["model_name", "provider_name", "budgets_used", "rate_limit_used", "updated_at"]
    list_filter = ["provider"]
    search_fields = ["model_name", "provider__name"]
    list_select_related = ["provider", "rate_limit"]
    autocomplete_fields = ["provider"]
    inlines = [BudgetInline, RateLimitInline]
    services = Services(
        create=model_config_create, update=model_config_update, delete=model_config_delete, instance="model_config"
    )
    service_fields = ("model_name", "provider")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelConfig]:
        return super().get_queryset(request).prefetch_related("budgets")

    @admin.display(description="provider", ordering="provider__name")
    def provider_name(self, config: ModelConfig) -> str:
        return config.provider.name if config.provider is not None else "every provider"

    @admin.display(description="budgets (spent / limit)")
    def budgets_used(self, config: ModelConfig) -> str:
        return budget_bars(config.budgets.all())

    @admin.display(description="rate limit")
    def rate_limit_used(self, config: ModelConfig) -> str:
        return rate_limit_bars(related_rate_limit(config))
