"""Pricing overrides: the list (scope, match, prices) and the edit page, saved through the services."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.utils.html import format_html

from governance.admin.common import GovernanceModelAdmin, ServiceAdminMixin, Services
from governance.models import PricingOverride
from governance.models.pricing_overrides import PRICE_FIELDS
from governance.price_overrides import REQUEST_TYPES, SERVED_REQUEST_TYPES
from governance.services import pricing_override_create, pricing_override_delete, pricing_override_update

PER_MILLION = 1_000_000
PRICE_HELP = "USD per token; empty: the catalog's price for this field (0 when the catalog has no row for the model)."


class PricingOverrideForm(forms.ModelForm):
    request_types = forms.MultipleChoiceField(
        choices=[(t, t) for t in REQUEST_TYPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None checked: every request type. chat_completion also covers messages (Anthropic) and "
        f"generate_content (Gemini). Served by this gateway: {', '.join(SERVED_REQUEST_TYPES)}.",
    )

    class Meta:
        model = PricingOverride
        fields = [
            "name",
            "scope_kind",
            "virtual_key",
            "provider",
            "provider_key",
            "match_type",
            "pattern",
            "request_types",
            *PRICE_FIELDS,
        ]
        help_texts = {
            "scope_kind": "Most specific wins: VK + provider key > VK + provider > VK > provider key > provider > "
            "global. Fill in exactly the identifiers the scope names.",
            "pattern": "exact: the model name as routed; prefix: ends with * (claude-3*); glob: * any characters, "
            "? one character (not a regex). A pattern matching no model yet is allowed.",
            "input_cost_per_token": PRICE_HELP,
            "output_cost_per_token": PRICE_HELP,
            "cached_input_cost_per_token": PRICE_HELP + " Empty with no catalog price: the input price.",
            "cost_per_request": "USD added once to every successful request.",
        }


@admin.register(PricingOverride)
class PricingOverrideAdmin(ServiceAdminMixin[PricingOverride], GovernanceModelAdmin[PricingOverride]):
    form = PricingOverrideForm
    list_display = [
        "name",
        "scope",
        "match",
        "types",
        "input_per_million",
        "output_per_million",
        "cached_per_million",
        "per_request",
        "created_at",
    ]
    list_filter = ["scope_kind", "match_type"]
    search_fields = ["name", "pattern", "virtual_key__name", "provider__name", "provider_key__name"]
    list_select_related = ["virtual_key", "provider", "provider_key__provider"]
    services = Services(
        create=pricing_override_create,
        update=pricing_override_update,
        delete=pricing_override_delete,
        instance="override",
    )

    def service_data(self, form: forms.ModelForm[PricingOverride], change: bool) -> dict[str, Any]:
        data = form.cleaned_data
        return {
            "name": data["name"],
            "scope_kind": data["scope_kind"],
            "virtual_key": data.get("virtual_key"),
            "provider": data.get("provider"),
            "provider_key": data.get("provider_key"),
            "match_type": data["match_type"],
            "pattern": data["pattern"],
            "request_types": list(data.get("request_types") or []),
            "prices": {name: data.get(name) for name in PRICE_FIELDS},
        }

    @admin.display(description="scope", ordering="scope_kind")
    def scope(self, override: PricingOverride) -> str:
        targets = [
            f"VK {override.virtual_key.name}" if override.virtual_key else "",
            f"provider {override.provider.name}" if override.provider else "",
            f"key {override.provider_key}" if override.provider_key else "",
        ]
        shown = ", ".join(t for t in targets if t)
        return format_html("{}<br><span class='quiet'>{}</span>", override.scope_kind, shown) if shown else "global"

    @admin.display(description="match", ordering="pattern")
    def match(self, override: PricingOverride) -> str:
        return format_html("<code>{}</code> <span class='quiet'>({})</span>", override.pattern, override.match_type)

    @admin.display(description="request types")
    def types(self, override: PricingOverride) -> str:
        return ", ".join(override.request_types) or "all"

    @admin.display(description="input $/1M tokens", ordering="input_cost_per_token")
    def input_per_million(self, override: PricingOverride) -> str:
        return _per_million(override.input_cost_per_token)

    @admin.display(description="output $/1M tokens", ordering="output_cost_per_token")
    def output_per_million(self, override: PricingOverride) -> str:
        return _per_million(override.output_cost_per_token)

    @admin.display(description="cached input $/1M tokens")
    def cached_per_million(self, override: PricingOverride) -> str:
        return _per_million(override.cached_input_cost_per_token)

    @admin.display(description="$ per request", ordering="cost_per_request")
    def per_request(self, override: PricingOverride) -> str:
        value = override.cost_per_request
        return "—" if value is None else f"{value.normalize():f}"


def _per_million(value: Decimal | None) -> str:
    if value is None:
        return format_html('<span class="quiet">{}</span>', "catalog")
    return f"{(value * PER_MILLION).normalize():f}"
