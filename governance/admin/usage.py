"""The usage ledger (the gateway's logs): every request, refusals by governance included, read-only.

The list shows each request's outcome with its reason (a refusal names the limits that refused),
who sent it, the model, tokens, cost and latency, with request and spend charts over the
selection (``governance.admin.usage_chart``); the detail page shows everything a row holds.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import SimpleTemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from governance.admin import usage_chart
from governance.admin.common import GovernanceModelAdmin, format_when
from governance.dashboard.charts import money
from governance.models import UsageRecord
from governance.models.usage import REFUSAL_TYPES
from governance.usage_stats import STATUSES, UsageFilter

# What a refusal's ``error_type`` is called in its badge ("refused · budget").
REFUSAL_LABELS = {
    "virtual_key_required": "no key",
    "virtual_key_not_found": "unknown key",
    "virtual_key_blocked": "key blocked",
    "provider_blocked": "provider blocked",
    "model_blocked": "model blocked",
    "key_blocked": "provider key blocked",
    "budget_exceeded": "budget",
    "request_limited": "rate limit",
    "token_limited": "rate limit",
    "rate_limited": "rate limit",
    "model_unpriced": "unpriced model",
    "governance_unavailable": "governance down",
}
# ``refused_by`` levels (``level:kind:id``) as a person reads them.
LEVEL_LABELS = {
    "virtual_key": "VK",
    "team": "team",
    "customer": "customer",
    "provider_config": "VK provider config",
    "provider": "provider",
    "model": "model config",
}
# Which count a rate limit refused on, from the refusal's type (``rate_limited``: both kinds).
RATE_KINDS = {"request_limited": " (requests)", "token_limited": " (tokens)", "rate_limited": ""}


def refusing_limits(record: UsageRecord) -> list[tuple[str, str, str]]:
    """``(label, kind, id)`` of each limit that refused ``record``: ``("VK budget", "budget", id)``,
    ``("team rate limit (requests)", "rate_limit", id)``. Unknown words are shown as they are."""
    out: list[tuple[str, str, str]] = []
    for word in record.refused_by.split():
        level, _, rest = word.partition(":")
        kind, _, spec_id = rest.partition(":")
        if level not in LEVEL_LABELS or kind not in ("budget", "rate_limit"):
            out.append((word, "", ""))
            continue
        what = "budget" if kind == "budget" else "rate limit" + RATE_KINDS.get(record.error_type, "")
        out.append((f"{LEVEL_LABELS[level]} {what}", kind, spec_id))
    return out


def is_refusal(record: UsageRecord) -> bool:
    return record.error_type in REFUSAL_TYPES


class OutcomeFilter(admin.SimpleListFilter):
    """Success, upstream error or refused by governance: the same split as ``/api/logs``' ``status``
    and the dashboard's figures (``UsageFilter.statuses``)."""

    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("success", "Success"), ("error", "Error (upstream or gateway)"), ("refused", "Refused by governance")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
        value = self.value()
        if value in STATUSES:
            return queryset.filter(UsageFilter(statuses=[value]).ledger_q())
        return queryset


class SinceFilter(admin.SimpleListFilter):
    title = "time"
    parameter_name = "since"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
        delta: timedelta | None = usage_chart.SINCE.get(self.value() or "")
        return queryset.filter(created_at__gte=timezone.now() - delta) if delta else queryset


class StatusFilter(admin.SimpleListFilter):
    title = "HTTP status"
    parameter_name = "status"
    RANGES = {"2xx": (200, 299), "4xx": (400, 499), "429": (429, 429), "5xx": (500, 599), "0": (0, 0)}

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [
            ("2xx", "Success (2xx)"),
            ("4xx", "Client error (4xx)"),
            ("429", "Limited (429)"),
            ("5xx", "Upstream error (5xx)"),
            ("0", "Worker died (0, settled by the lease reaper)"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
        value = self.value()
        if value is not None and value in self.RANGES:
            low, high = self.RANGES[value]
            return queryset.filter(status_code__gte=low, status_code__lte=high)
        return queryset


def _limit_link(kind: str, spec_id: str) -> str:
    model = {"budget": "budget", "rate_limit": "ratelimit"}.get(kind)
    if not model or not spec_id:
        return ""
    return reverse(f"admin:governance_{model}_change", args=[spec_id])


@admin.register(UsageRecord)
class UsageRecordAdmin(GovernanceModelAdmin[UsageRecord]):
    """Read-only: the ledger is written by the proxy only, and counters can be rebuilt from it."""

    change_list_template = "admin/governance/usagerecord/change_list.html"
    list_display = ["when", "outcome", "sender", "model_display", "tokens", "cost_display", "latency"]
    list_display_links = ["when"]
    list_filter = [
        OutcomeFilter,
        SinceFilter,
        StatusFilter,
        "provider",
        "model",
        ("virtual_key", admin.RelatedOnlyFieldListFilter),
        ("team", admin.RelatedOnlyFieldListFilter),
        ("customer", admin.RelatedOnlyFieldListFilter),
        "priced",
        "streamed",
        "created_at",
    ]
    search_fields = ["model", "virtual_key__name", "=http_request_id", "request_id"]
    search_help_text = "Model, virtual key name or a request id (the client's x-request-id)."
    list_select_related = ["virtual_key", "team", "customer"]
    date_hierarchy = "created_at"
    # Counting a large ledger on every page view is slow; the pager does without the total.
    show_full_result_count = False
    fieldsets = [
        ("Outcome", {"fields": ["outcome_detail", "status_code", "error_type", "error_text", "refused_by_detail"]}),
        (
            "Request",
            {
                "fields": [
                    "created_when",
                    "http_request_id_detail",
                    "request_id",
                    "fallback_index",
                    "request_type",
                    "streamed",
                    "upstream_reached",
                    "virtual_key",
                    "team",
                    "customer",
                    "provider",
                    "model",
                    "provider_key",
                ]
            },
        ),
        ("Tokens", {"fields": ["prompt_detail", "completion_detail", "total_detail"]}),
        ("Cost and latency", {"fields": ["cost_detail", "cost_breakdown", "latency_detail"]}),
    ]
    readonly_fields = [
        "outcome_detail",
        "error_text",
        "refused_by_detail",
        "created_when",
        "http_request_id_detail",
        "cost_detail",
        "cost_breakdown",
        "prompt_detail",
        "completion_detail",
        "total_detail",
        "latency_detail",
        "request_id",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    # --- list columns -----------------------------------------------------------------------

    @admin.display(description="when (UTC)", ordering="created_at")
    def when(self, record: UsageRecord) -> str:
        return format_html(
            '<span class="gov-when" title="{}">{}</span>',
            record.created_at.isoformat(),
            format_when(record.created_at).removesuffix(" UTC"),
        )

    @admin.display(description="outcome", ordering="status_code")
    def outcome(self, record: UsageRecord) -> str:
        if is_refusal(record):
            reason = REFUSAL_LABELS.get(record.error_type, record.error_type)
            limits = ", ".join(label for label, _, _ in refusing_limits(record))
            return format_html(
                '<span class="gov-badge gov-badge-warn" title="{msg}">refused · {reason}</span>'
                '<span class="gov-outcome-detail" title="{msg}">{status}{sep}{limits}</span>',
                msg=record.error_message or record.error_type,
                reason=reason,
                status=record.status_code,
                sep=" · " if limits else "",
                limits=limits,
            )
        status = record.status_code
        if status and status < 400 and not record.error_type:
            return format_html('<span class="gov-badge gov-badge-ok">{}</span>', status)
        return format_html(
            '<span class="gov-badge gov-badge-over" title="{msg}">{label}</span>'
            '<span class="gov-outcome-detail" title="{msg}">{type}</span>',
            msg=record.error_message or record.error_type or "",
            label=status if status else "0 · worker died",
            type=record.error_type,
        )

    @admin.display(description="key · owner", ordering="virtual_key__name")
    def sender(self, record: UsageRecord) -> str:
        owner = record.team or record.customer
        kind = "team" if record.team else "customer"
        return format_html(
            "{}{}",
            record.virtual_key.name if record.virtual_key else format_html('<span class="quiet">{}</span>', "no key"),
            format_html('<span class="gov-sub">{} {}</span>', kind, owner.name) if owner else "",
        )

    @admin.display(description="model · provider", ordering="model")
    def model_display(self, record: UsageRecord) -> str:
        return format_html(
            '{}<span class="gov-sub">{}{}</span>',
            record.model or "—",
            record.provider or "no provider",
            " · stream" if record.streamed else "",
        )

    @admin.display(description="tokens", ordering="total_tokens")
    def tokens(self, record: UsageRecord) -> str:
        if not record.total_tokens:
            return "—"
        parts = [
            f"{record.prompt_tokens:,} in",
            f"{record.completion_tokens:,} out",
            f"{record.cached_tokens:,} cached",
            f"{record.reasoning_tokens:,} reasoning",
        ]
        return format_html(
            '<span title="{}">{}<span class="gov-sub">{} → {}</span></span>',
            ", ".join(parts),
            f"{record.total_tokens:,}",
            f"{record.prompt_tokens:,}",
            f"{record.completion_tokens:,}",
        )

    @admin.display(description="cost", ordering="cost")
    def cost_display(self, record: UsageRecord) -> str:
        if not record.priced:
            return format_html(
                '{} <span class="gov-badge gov-badge-over" title="No price for this model: not charged">'
                "unpriced</span>",
                money(record.cost),
            )
        return money(record.cost)

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, record: UsageRecord) -> str:
        return f"{record.latency_ms:,} ms"

    # --- detail fields ----------------------------------------------------------------------

    @admin.display(description="outcome")
    def outcome_detail(self, record: UsageRecord) -> str:
        return self.outcome(record)

    @admin.display(description="error message")
    def error_text(self, record: UsageRecord) -> str:
        if not record.error_message:
            return "—"
        return format_html('<div class="gov-error-message">{}</div>', record.error_message)

    @admin.display(description="refused by")
    def refused_by_detail(self, record: UsageRecord) -> str:
        limits = refusing_limits(record)
        if not limits:
            return "—"
        items = [
            format_html('<a href="{}">{}</a>', url, label) if (url := _limit_link(kind, spec_id)) else label
            for label, kind, spec_id in limits
        ]
        return format_html(
            "<ul class='gov-plain-list'>{}</ul>", format_html_join("", "<li>{}</li>", ((i,) for i in items))
        )

    @admin.display(description="created at")
    def created_when(self, record: UsageRecord) -> str:
        return format_html('<span title="{}">{}</span>', record.created_at.isoformat(), format_when(record.created_at))

    @admin.display(description="request id (x-request-id)")
    def http_request_id_detail(self, record: UsageRecord) -> str:
        if not record.http_request_id:
            return "—"
        url = reverse("admin:governance_usagerecord_changelist") + "?" + urlencode({"q": record.http_request_id})
        return format_html(
            '<code>{}</code> <a href="{}">every attempt of this request</a>', record.http_request_id, url
        )

    @admin.display(description="cost")
    def cost_detail(self, record: UsageRecord) -> str:
        return format_html(
            "{}{}",
            self.cost_display(record),
            format_html(' <span class="quiet">at {}</span>', record.price_source) if record.price_source else "",
        )

    @admin.display(description="cost breakdown")
    def cost_breakdown(self, record: UsageRecord) -> str:
        if record.input_cost is None and record.output_cost is None:
            return "— (the upstream reported the cost, or nothing was priced)"
        parts = [("input", record.input_cost), ("output", record.output_cost)]
        return " · ".join(f"{name} {money(value)}" for name, value in parts if value is not None)

    @admin.display(description="prompt tokens")
    def prompt_detail(self, record: UsageRecord) -> str:
        return f"{record.prompt_tokens:,} (cached: {record.cached_tokens:,})"

    @admin.display(description="completion tokens")
    def completion_detail(self, record: UsageRecord) -> str:
        return f"{record.completion_tokens:,} (reasoning: {record.reasoning_tokens:,})"

    @admin.display(description="total tokens")
    def total_detail(self, record: UsageRecord) -> str:
        if record.estimated:
            return format_html(
                '{} <span class="gov-badge gov-badge-warn" title="{}">estimated</span>',
                f"{record.total_tokens:,}",
                "The gateway's estimate: the upstream's usage could not be read.",
            )
        return f"{record.total_tokens:,}"

    @admin.display(description="latency")
    def latency_detail(self, record: UsageRecord) -> str:
        return self.latency(record)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        # Redirects (after an invalid filter) have no context; only a rendered list gets charts.
        context = response.context_data if isinstance(response, SimpleTemplateResponse) else None
        changelist = (context or {}).get("cl")
        if context is not None and changelist is not None:
            data = usage_chart.series(changelist.queryset, request.GET.dict())
            if data is not None:
                context.update(usage_chart.charts_context(data))
        return response
