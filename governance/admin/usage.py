"""The usage ledger: read-only rows, filters, and daily spend / token charts (server-rendered SVG)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.template.response import SimpleTemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from governance.admin.common import GovernanceModelAdmin
from governance.dashboard.charts import money
from governance.models import UsageRecord

CHART_DAYS = 31
CHART_WIDTH = 620
CHART_HEIGHT = 120


class StatusFilter(admin.SimpleListFilter):
    title = "status"
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


@admin.register(UsageRecord)
class UsageRecordAdmin(GovernanceModelAdmin[UsageRecord]):
    """Read-only: the ledger is written by the proxy only, and counters can be rebuilt from it."""

    change_list_template = "admin/governance/usagerecord/change_list.html"
    list_display = [
        "created_at",
        "virtual_key",
        "team",
        "customer",
        "provider",
        "model",
        "status",
        "total_tokens",
        "cost_display",
        "latency_ms",
        "streamed",
    ]
    list_filter = [
        StatusFilter,
        "priced",
        "streamed",
        "provider",
        "model",
        ("virtual_key", admin.RelatedOnlyFieldListFilter),
        ("team", admin.RelatedOnlyFieldListFilter),
        ("customer", admin.RelatedOnlyFieldListFilter),
        "created_at",
    ]
    search_fields = ["model", "virtual_key__name", "request_id"]
    list_select_related = ["virtual_key", "team", "customer"]
    date_hierarchy = "created_at"
    # Counting a large ledger on every page view is slow; the pager does without the total.
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    @admin.display(description="status", ordering="status_code")
    def status(self, record: UsageRecord) -> str:
        status = record.status_code
        level = "over" if status == 0 or status >= 500 else ("warn" if status >= 400 else "ok")
        return format_html('<span class="gov-badge gov-badge-{}">{}</span>', level, record.status_code)

    @admin.display(description="cost", ordering="cost")
    def cost_display(self, record: UsageRecord) -> str:
        if not record.priced:
            return format_html(
                '{} <span class="gov-badge gov-badge-over" title="No price for this model: not charged">'
                "unpriced</span>",
                money(record.cost),
            )
        return money(record.cost)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        # Redirects (after an invalid filter) have no context; only a rendered list gets charts.
        context = response.context_data if isinstance(response, SimpleTemplateResponse) else None
        changelist = (context or {}).get("cl")
        if context is not None and changelist is not None:
            days = daily_totals(changelist.queryset)
            context["spend_chart"] = bar_chart(days, "cost", money)
            context["token_chart"] = bar_chart(days, "tokens", lambda v: f"{v:,}")
            context["chart_days"] = len(days)
        return response


def daily_totals(queryset: QuerySet[UsageRecord]) -> list[dict[str, Any]]:
    """Spend, tokens and requests per UTC day for the latest ``CHART_DAYS`` days in ``queryset``."""
    rows = (
        queryset.order_by()
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(cost=Sum("cost"), tokens=Sum("total_tokens"), requests=Count("id"))
        .order_by("-day")[:CHART_DAYS]
    )
    return list(reversed(rows))


def bar_chart(days: list[dict[str, Any]], key: str, fmt: Callable[[Decimal | int], str]) -> SafeString:
    """An inline SVG bar chart, one bar per day, each with a tooltip (no script, no CDN)."""
    if not days:
        return SafeString("")
    peak = max((Decimal(day[key] or 0) for day in days), default=Decimal(0))
    scale = peak or Decimal(1)  # all-zero days draw flat bars
    slot = CHART_WIDTH / max(len(days), 1)
    bars = []
    for index, day in enumerate(days):
        value = Decimal(day[key] or 0)
        height = float(value / scale) * (CHART_HEIGHT - 4)
        bars.append(
            (
                f"{index * slot + 1:.1f}",
                f"{CHART_HEIGHT - height:.1f}",
                f"{max(slot - 2, 1):.1f}",
                f"{height:.1f}",
                f"{day['day']:%Y-%m-%d}: {fmt(day[key] or 0)} ({day['requests']} requests)",
            )
        )
    body = format_html_join(
        "",
        '<rect class="gov-chart-bar" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
        bars,
    )
    return format_html(
        '<svg class="gov-chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{label}">'
        '{body}<line class="gov-chart-axis" x1="0" y1="{h}" x2="{w}" y2="{h}"></line></svg>'
        '<div class="gov-chart-legend"><span>{first}</span><span>peak {peak}</span>'
        "<span>{last}</span></div>",
        w=CHART_WIDTH,
        h=CHART_HEIGHT,
        label=f"{key} per day",
        body=body,
        first=f"{days[0]['day']:%Y-%m-%d}",
        last=f"{days[-1]['day']:%Y-%m-%d}",
        peak=fmt(peak if key == "cost" else int(peak)),
    )
