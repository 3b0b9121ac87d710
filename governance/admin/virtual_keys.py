"""Virtual keys: list with budget and rate-limit bars, inline limits and provider configs,
activate / deactivate / rotate / reset-usage actions, and the one-time value page."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, DecimalField, IntegerField, Model, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from governance import mcp_upstream
from governance.admin.common import (
    GovernanceModelAdmin,
    Services,
    budget_bars,
    hold_secret,
    rate_limit_bars,
    related_rate_limit,
    stash_secrets,
)
from governance.admin.inlines import BudgetInline, LimitsOwnerAdminMixin, RateLimitInline, live_forms, record_changes
from governance.admin.mcp import tools_summary
from governance.admin.secrets import one_time_secret_view
from governance.dashboard.entity import UsagePanelMixin
from governance.forms import McpConfigInlineForm, ProviderConfigInlineForm, VirtualKeyAdminForm
from governance.mcp_upstream import Discovery
from governance.models import Budget, McpClient, ProviderConfig, VirtualKey, VirtualKeyMcpConfig
from governance.services import (
    budget_reset_usage,
    virtual_key_create,
    virtual_key_delete,
    virtual_key_rotate,
    virtual_key_set_active,
    virtual_key_update,
)
from governance.services.virtual_keys import mcp_configs_replace, provider_configs_reconcile

if TYPE_CHECKING:
    from governance.admin.inlines import InlineFormSet

VK_FORM_FIELDS = tuple(VirtualKeyAdminForm.Meta.fields)  # what the form edits is what the service is given


class ExpiredFilter(admin.SimpleListFilter):
    title = "expired"
    parameter_name = "expired"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("yes", "Expired"), ("no", "Not expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[VirtualKey]) -> QuerySet[VirtualKey]:
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(expires_at__lte=now)
        if self.value() == "no":
            return queryset.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        return queryset


class ProviderConfigInline(admin.TabularInline):
    model = ProviderConfig
    form = ProviderConfigInlineForm
    extra = 0
    fields = ["provider", "weight", "allowed_models", "allow_all_keys", "keys", "limits"]
    readonly_fields = ["limits"]
    autocomplete_fields = ["provider"]
    verbose_name_plural = "provider configs (which providers, models and keys this key may use)"

    @admin.display(description="own budgets & rate limit")
    def limits(self, config: ProviderConfig) -> str:
        if not config.pk:
            return "Save first, then edit its budgets and rate limit."
        url = reverse("admin:governance_providerconfig_change", args=[config.pk])
        return format_html('{}<a href="{}">edit limits</a>', budget_bars(config.budgets.all()), url)


class McpConfigInline(admin.TabularInline):
    model = VirtualKeyMcpConfig
    form = McpConfigInlineForm
    extra = 0
    autocomplete_fields = ["mcp_client"]
    readonly_fields = ["available_tools"]
    verbose_name_plural = "MCP clients this key may use"

    @admin.display(description="tools the client offers")
    def available_tools(self, config: VirtualKeyMcpConfig) -> str:
        """What to pick ``tools_to_execute`` from: the client's discovered tools (every client of
        the key fetched at once, bounded in time; an unreachable server says so)."""
        if not config.pk:
            return "save to see the client's tools"
        found: dict[int, Discovery] | None = getattr(self, "_found", None)
        if found is None:
            clients = list(McpClient.objects.filter(virtual_key_configs__virtual_key_id=config.virtual_key_id))
            self._found = found = mcp_upstream.discover(clients)
        return tools_summary(found[config.mcp_client_id]) if config.mcp_client_id in found else "—"


@admin.register(VirtualKey)
class VirtualKeyAdmin(UsagePanelMixin[VirtualKey], LimitsOwnerAdminMixin[VirtualKey], GovernanceModelAdmin[VirtualKey]):
    usage_field = "virtual_key"
    form = VirtualKeyAdminForm
    change_form_template = "admin/governance/virtualkey/change_form.html"
    list_display = [
        "name",
        "masked",
        "status",
        "attached_to",
        "budgets_used",
        "rate_limit_used",
        "providers",
        "expires_at",
    ]
    list_filter = ["is_active", ExpiredFilter, "team", "customer", "allow_all_providers"]
    search_fields = ["name", "description", "team__name", "customer__name", "value_last4"]
    list_select_related = ["team", "customer", "rate_limit"]
    autocomplete_fields = ["team", "customer"]
    readonly_fields = ["masked", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "description", "masked", "is_active", "expires_at"]}),
        ("Attachment", {"fields": ["team", "customer"]}),
        ("Providers", {"fields": ["allow_all_providers"]}),
        ("Content logging", {"fields": ["log_content"]}),
        ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    inlines = [BudgetInline, RateLimitInline, ProviderConfigInline, McpConfigInline]
    actions = ["activate", "deactivate", "rotate", "reset_budget_usage"]
    services = Services(create=virtual_key_create, update=virtual_key_update, delete=virtual_key_delete, instance="vk")
    service_fields = VK_FORM_FIELDS

    # --- list --------------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[VirtualKey]:
        # Subqueries, not joins: summing budgets over a join with provider configs would count
        # each budget once per config.
        spent = (
            Budget.objects.filter(virtual_key=OuterRef("pk"))
            .values("virtual_key")
            .annotate(total=Sum("current_usage"))
            .values("total")
        )
        configs = (
            ProviderConfig.objects.filter(virtual_key=OuterRef("pk"))
            .values("virtual_key")
            .annotate(total=Count("pk"))
            .values("total")
        )
        money_field: DecimalField[Decimal, Decimal] = DecimalField(max_digits=24, decimal_places=10)
        return (
            super()
            .get_queryset(request)
            .prefetch_related("budgets")
            .annotate(
                budget_spent=Coalesce(Subquery(spent, output_field=money_field), Value(0), output_field=money_field),
                provider_count=Coalesce(Subquery(configs, output_field=IntegerField()), Value(0)),
            )
        )

    @admin.display(description="value")
    def masked(self, vk: VirtualKey) -> str:
        if vk._state.adding:
            return "Generated by the server when you save, and shown once."
        return format_html('<code class="gov-masked">{}</code>', vk.masked_value)

    @admin.display(description="status", ordering="is_active")
    def status(self, vk: VirtualKey) -> str:
        if not vk.is_active:
            return format_html('<span class="gov-badge gov-badge-{}">{}</span>', "off", "inactive")
        if vk.is_expired:
            return format_html('<span class="gov-badge gov-badge-{}">{}</span>', "over", "expired")
        return format_html('<span class="gov-badge gov-badge-{}">{}</span>', "ok", "active")

    @admin.display(description="attached to")
    def attached_to(self, vk: VirtualKey) -> str:
        if vk.team_id and vk.team is not None:
            url = reverse("admin:governance_team_change", args=[vk.team_id])
            return format_html('team <a href="{}">{}</a>', url, vk.team.name)
        if vk.customer_id and vk.customer is not None:
            url = reverse("admin:governance_customer_change", args=[vk.customer_id])
            return format_html('customer <a href="{}">{}</a>', url, vk.customer.name)
        return "—"

    @admin.display(description="budgets (spent / limit)", ordering="budget_spent")
    def budgets_used(self, vk: VirtualKey) -> str:
        return budget_bars(vk.budgets.all())

    @admin.display(description="rate limit")
    def rate_limit_used(self, vk: VirtualKey) -> str:
        return rate_limit_bars(related_rate_limit(vk))

    @admin.display(description="provider configs", ordering="provider_count")
    def providers(self, vk: VirtualKey) -> str:
        count = getattr(vk, "provider_count", None)
        if count:
            return str(count)
        return "all" if vk.allow_all_providers else "none"

    # --- saving through the services ---------------------------------------------------------

    def created(self, request: HttpRequest, result: tuple[VirtualKey, str]) -> VirtualKey:
        vk, value = result
        hold_secret(request, label=vk.name, value=value, kind="virtual key", url=self._change_url(vk))
        return vk

    def save_formset(
        self, request: HttpRequest, form: forms.ModelForm[VirtualKey], formset: InlineFormSet, change: bool
    ) -> None:
        vk = form.instance
        if formset.model is ProviderConfig:
            specs = [_provider_config_spec(f, formset) for f in live_forms(formset)]
            self.run_service(provider_configs_reconcile, vk=vk, configs=specs)
        elif formset.model is VirtualKeyMcpConfig:
            specs = [
                {
                    "mcp_client_name": f.cleaned_data["mcp_client"].name,
                    "tools_to_execute": f.cleaned_data["tools_to_execute"],
                }
                for f in live_forms(formset)
            ]
            self.run_service(mcp_configs_replace, vk=vk, configs=specs)
        else:
            super().save_formset(request, form, formset, change)
            return
        record_changes(formset)

    def response_add(self, request: HttpRequest, obj: VirtualKey, post_url_continue: str | None = None) -> HttpResponse:
        # Also from an add popup: the value page replaces the popup's form, since the value is
        # shown nowhere else.
        if stash_secrets(request):
            self.message_user(request, f"The virtual key “{obj.name}” was added.", messages.SUCCESS)
            return redirect(self._secret_url())
        return super().response_add(request, obj, post_url_continue)

    # --- actions -----------------------------------------------------------------------------

    @admin.action(description="Activate selected virtual keys", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[VirtualKey]) -> None:
        self._set_active(request, queryset, True)

    @admin.action(description="Deactivate selected virtual keys", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[VirtualKey]) -> None:
        self._set_active(request, queryset, False)

    def _set_active(self, request: HttpRequest, queryset: QuerySet[VirtualKey], active: bool) -> None:
        with transaction.atomic():
            keys = list(queryset)
            for vk in keys:
                virtual_key_set_active(vk=vk, active=active)
        state = "activated" if active else "deactivated"
        self.message_user(request, f"{len(keys)} virtual key(s) {state}.", messages.SUCCESS)

    @admin.action(description="Rotate values of selected virtual keys…", permissions=["change"])
    def rotate(self, request: HttpRequest, queryset: QuerySet[VirtualKey]) -> HttpResponse | None:
        keys = list(queryset.order_by("name"))
        if request.POST.get("post") != "yes":
            return self._confirm_rotate(request, keys, action=True)
        return self._rotate(request, keys)

    @admin.action(description="Reset budget usage of selected virtual keys", permissions=["change"])
    def reset_budget_usage(self, request: HttpRequest, queryset: QuerySet[VirtualKey]) -> None:
        reset_budgets(self, request, Budget.objects.filter(virtual_key__in=queryset))

    def _rotate(self, request: HttpRequest, keys: list[VirtualKey]) -> HttpResponse:
        secrets: list[dict[str, str]] = []
        with transaction.atomic():
            for vk in keys:
                value = virtual_key_rotate(vk=vk)
                secrets.append({"label": vk.name, "value": value, "kind": "virtual key", "url": self._change_url(vk)})
        stash_secrets(request, secrets)
        self.message_user(
            request, f"{len(keys)} virtual key(s) rotated; the old values no longer work.", messages.SUCCESS
        )
        return redirect(self._secret_url())

    def _confirm_rotate(self, request: HttpRequest, keys: list[VirtualKey], *, action: bool) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Rotate virtual key values?",
            "opts": self.model._meta,
            "keys": keys,
            "from_action": action,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        return TemplateResponse(request, "admin/governance/virtualkey/confirm_rotate.html", context)

    # --- extra pages -------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("one-time-value/", wrap(self.one_time_value_view), name="governance_virtualkey_one_time_value"),
            path("<path:object_id>/rotate/", wrap(self.rotate_view), name="governance_virtualkey_rotate"),
            *super().get_urls(),
        ]

    def one_time_value_view(self, request: HttpRequest) -> HttpResponse:
        return one_time_secret_view(request, self)

    def rotate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        vk = self.get_object(request, unquote(object_id))
        if vk is None:
            raise Http404("Virtual key not found")
        if not self.has_change_permission(request, vk):
            raise PermissionDenied
        if request.method == "POST":
            return self._rotate(request, [vk])
        return self._confirm_rotate(request, [vk], action=False)

    def _secret_url(self) -> str:
        return reverse("admin:governance_virtualkey_one_time_value")

    @staticmethod
    def _change_url(vk: VirtualKey) -> str:
        return reverse("admin:governance_virtualkey_change", args=[vk.pk])


def _provider_config_spec(form: forms.ModelForm[Model], formset: InlineFormSet) -> dict[str, Any]:
    data = form.cleaned_data
    return {
        "id": form.instance.pk if form in formset.initial_forms else None,
        "provider": data["provider"].name,
        "weight": data.get("weight"),
        "allowed_models": data.get("allowed_models", []),
        "key_ids": ["*"] if data.get("allow_all_keys") else [str(key.pk) for key in data.get("keys") or []],
    }


def reset_budgets(model_admin: admin.ModelAdmin[Any], request: HttpRequest, budgets: QuerySet[Budget]) -> None:
    """Zero the usage of ``budgets`` (one service call each) and say how many were reset."""
    with transaction.atomic():
        rows = list(budgets)
        for budget in rows:
            budget_reset_usage(budget=budget)
    model_admin.message_user(request, f"Usage reset on {len(rows)} budget(s).", messages.SUCCESS)
