"""Virtual keys: the list (budget and rate-limit bars, budget use, last use, whether the key can
call a provider), inline limits and provider configs, activate / deactivate / rotate /
reset-usage actions, and the one-time value page."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import (
    Count,
    DecimalField,
    F,
    IntegerField,
    Model,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from governance import mcp_upstream
from governance.admin import virtual_key_list as columns
from governance.admin.common import (
    GovernanceModelAdmin,
    Services,
    budget_bars,
    format_when,
    hold_secret,
    rate_limit_bars,
    related_rate_limit,
    stash_secrets,
)
from governance.admin.inlines import BudgetInline, LimitsOwnerAdminMixin, RateLimitInline, live_forms, record_changes
from governance.admin.mcp import tools_summary
from governance.admin.secrets import one_time_secret_view
from governance.admin.virtual_key_activity import activity
from governance.dashboard.entity import UsagePanelMixin
from governance.forms import McpConfigInlineForm, ProviderConfigInlineForm, VirtualKeyAdminForm
from governance.mcp_upstream import Discovery
from governance.models import Budget, McpClient, ProviderConfig, ProviderKey, VirtualKey, VirtualKeyMcpConfig
from governance.selectors import highest_budget_use, last_used
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
ADD_HIDDEN = ("provider_reach",)


class ProviderConfigInline(admin.TabularInline):
    model = ProviderConfig
    form = ProviderConfigInlineForm
    extra = 0
    fields = ["provider", "weight", "allowed_models", "allow_all_keys", "keys", "limits"]
    readonly_fields = ["limits"]
    # A plain select, not an autocomplete: providers are few, and the key picker's script
    # (``provider_keys.js``) follows the select's own change events.
    verbose_name_plural = "provider configs (which providers, models and keys this key may use)"

    class Media:
        js = ("governance/provider_keys.js",)

    @admin.display(description="own budgets & rate limit")
    def limits(self, config: ProviderConfig) -> str:
        if not config.pk:
            return "Save first, then edit its budgets and rate limit."
        url = reverse("admin:governance_providerconfig_change", args=[config.pk])
        return format_html('{}<a href="{}">edit limits</a>', budget_bars(config.budgets.all()), url)


class VirtualKeyBudgetInline(BudgetInline):
    extra_on_add = 1  # a new key starts with one budget row; left blank, the key has no budget
    verbose_name_plural = "budgets (one per reset duration; a row left blank adds none)"


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
        "name_and_value",
        "status",
        "attached_to",
        "budgets_used",
        "budget_use",
        "rate_limit_used",
        "providers",
        "last_used_at",
        "expiry",
    ]
    list_filter = [
        "is_active",
        columns.BudgetUseFilter,
        columns.RateLimitedFilter,
        columns.ExpiredFilter,
        "team",
        "customer",
        "allow_all_providers",
    ]
    search_fields = ["name", "description", "team__name", "customer__name", "value_last4"]
    list_select_related = ["team", "customer", "rate_limit"]
    autocomplete_fields = ["team", "customer"]
    readonly_fields = ["masked", "provider_reach", "activity", "created_when", "updated_when"]
    fieldsets = [
        (None, {"fields": ["name", "description", "masked", "is_active", "expires_at"]}),
        ("Attachment", {"fields": ["team", "customer"]}),
        ("Providers", {"fields": ["allow_all_providers", "provider_reach"]}),
        ("Activity", {"fields": ["activity"]}),
        ("Content logging", {"fields": ["log_content"]}),
        ("History", {"fields": ["created_when", "updated_when"], "classes": ["collapse"]}),
    ]
    inlines = [VirtualKeyBudgetInline, RateLimitInline, ProviderConfigInline, McpConfigInline]
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
            .prefetch_related("budgets", "provider_configs__provider")
            .annotate(
                budget_spent=Coalesce(Subquery(spent, output_field=money_field), Value(0), output_field=money_field),
                budget_use=highest_budget_use(),
                last_used_at=last_used(),
                provider_count=Coalesce(Subquery(configs, output_field=IntegerField()), Value(0)),
            )
        )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return columns.VirtualKeyChangeList

    # One column for both: the list must fit a 1400 px window beside the navigation and filters.
    @admin.display(description="name / value", ordering="name")
    def name_and_value(self, vk: VirtualKey) -> str:
        return format_html('{}<code class="gov-masked gov-sub-value">{}</code>', vk.name, vk.masked_value)

    @admin.display(description="value")
    def masked(self, vk: VirtualKey) -> str:
        if vk._state.adding:
            return "Generated by the server when you save, and shown once."
        return format_html('<code class="gov-masked">{}</code>', vk.masked_value)

    @admin.display(description="status", ordering="is_active")
    def status(self, vk: VirtualKey) -> str:
        return columns.status_badge(vk)

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

    # Shown live (as the bars beside it); sorted by the settled counters in SQL, which differ
    # only for a window that ended without traffic since.
    # Keys without a figure (no budget, never used, no expiry) sort at the same end on every
    # database: PostgreSQL puts NULLs first in descending order, SQLite last. Descending (the
    # admin reverses these) puts the fullest and the latest first, keys without one last.
    @admin.display(description="% of budget", ordering=F("budget_use").asc(nulls_first=True))
    def budget_use(self, vk: VirtualKey) -> str:
        return columns.budget_use(vk)

    @admin.display(description="rate limit")
    def rate_limit_used(self, vk: VirtualKey) -> str:
        return rate_limit_bars(related_rate_limit(vk))

    @admin.display(description="providers", ordering="provider_count")
    def providers(self, vk: VirtualKey) -> str:
        return columns.provider_names(vk)

    @admin.display(description="last used", ordering=F("last_used_at").asc(nulls_first=True))
    def last_used_at(self, vk: VirtualKey) -> str:
        return columns.when_cell(getattr(vk, "last_used_at", None), "never")

    @admin.display(description="expiry", ordering=F("expires_at").asc(nulls_last=True))
    def expiry(self, vk: VirtualKey) -> str:
        return columns.expiry_cell(vk)

    # --- add and change pages ----------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: VirtualKey | None = None) -> Any:
        if obj is not None:
            return self.fieldsets
        # A key not yet saved has no use to show and nothing to check its providers against.
        return [
            (name, {**options, "fields": [f for f in options["fields"] if f not in ADD_HIDDEN]})
            for name, options in self.fieldsets
            if name not in ("Activity", "History")
        ]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """A new key may call every provider when at least one provider has an enabled key.

        Chosen over a pre-filled provider config for the first provider: with several providers
        the first one would be an arbitrary pick, and a config that leaves its keys unticked
        allows none of them. "Allow all providers" is one visible checkbox that makes the new
        key work at once with any configured provider (as a LiteLLM key without model limits
        does), and unticking it, or adding configs, narrows it.
        """
        initial: dict[str, Any] = dict(super().get_changeform_initial_data(request))
        initial.setdefault("allow_all_providers", ProviderKey.objects.filter(enabled=True).exists())
        return initial

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        if object_id is None and not ProviderKey.objects.filter(enabled=True).exists():
            extra_context["no_provider_notice"] = True
            extra_context["provider_add_url"] = reverse("admin:governance_provider_add")
            extra_context["provider_key_add_url"] = reverse("admin:governance_providerkey_add")
        return super().changeform_view(request, object_id, form_url, extra_context)

    @admin.display(description="can call")
    def provider_reach(self, vk: VirtualKey) -> str:
        if vk._state.adding:
            return "Checked when you save: the key's status then says whether it can call a provider."
        reach = columns.reach_of(vk)
        if not reach.providers:
            return format_html(
                '{} <span class="gov-reach-problem">{}</span>', columns.badge("warn", "no provider"), reach.problem
            )
        return ", ".join(provider.name for provider in reach.providers)

    @admin.display(description="usage")
    def activity(self, vk: VirtualKey) -> str:
        if vk._state.adding:
            return "—"
        return activity(vk)

    @admin.display(description="created")
    def created_when(self, vk: VirtualKey) -> str:
        return format_when(vk.created_at)

    @admin.display(description="last changed")
    def updated_when(self, vk: VirtualKey) -> str:
        return format_when(vk.updated_at)

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
