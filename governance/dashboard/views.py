"""Admin views: the usage dashboard and the CSV export of usage records."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from governance import selectors
from governance.dashboard import charts, reports
from governance.dashboard.filters import UsageFilterForm
from governance.metering.live import live_usage
from governance.models import Budget, RateLimit

CSV_COLUMNS = [
    "created_at",
    "request_id",
    "virtual_key",
    "team",
    "customer",
    "provider",
    "model",
    "request_type",
    "status_code",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
    "cost",
    "latency_ms",
    "streamed",
    "priced",
    "price_source",
]


def _require_view_usage(request: HttpRequest) -> None:
    if not request.user.has_perm("governance.view_usagerecord"):
        raise PermissionDenied


def _owner_label(row: Budget | RateLimit) -> str:
    # A set ``*_id`` and a non-None related row are the same test (the rows come select_related).
    if row.virtual_key is not None:
        return f"VK {row.virtual_key.name}"
    if row.team is not None:
        return f"Team {row.team.name}"
    if row.customer is not None:
        return f"Customer {row.customer.name}"
    if row.model_config is not None:
        return f"Model {row.model_config.label}"
    if row.provider is not None:
        return f"Provider {row.provider.name}"
    config = row.provider_config
    if config is None:
        raise ValueError(f"{row!r} has no owner")
    return f"VK {config.virtual_key.name} / {config.provider.name}"


def budget_bar(budget: Budget, state: dict[str, Any]) -> dict[str, Any]:
    """Template values of one budget's bar, from its live state (``governance.metering.live``)."""
    fraction = float(state["usage"] / budget.max_limit) if budget.max_limit else 0.0
    return {
        "used": state["usage"],
        "limit": budget.max_limit,
        "percent": min(fraction * 100, 100),
        "level": charts.usage_level(fraction),
        "duration": budget.reset_duration,
        "resets_at": state["resets_at"],
    }


def budget_bars(now: datetime | None = None) -> list[dict[str, Any]]:
    budgets = list(selectors.budgets_with_owner().select_related("provider_config__virtual_key"))
    usage = live_usage(budgets, [], now or timezone.now())
    bars: list[dict[str, Any]] = []
    for budget in budgets:
        bars.append({"owner": _owner_label(budget), **budget_bar(budget, usage[("budget", budget.pk)])})
    return sorted(bars, key=lambda bar: -bar["percent"])


def rate_limit_bars(now: datetime | None = None) -> list[dict[str, Any]]:
    rows = list(
        RateLimit.objects.select_related(
            "virtual_key",
            "team",
            "customer",
            "provider_config__virtual_key",
            "provider_config__provider",
            "model_config__provider",
            "provider",
        )
    )
    usage = live_usage([], rows, now or timezone.now())
    bars: list[dict[str, Any]] = []
    for row in rows:
        state = usage[("rate_limit", row.pk)]
        for kind, used_key in (("request", "requests"), ("token", "tokens")):
            limit = getattr(row, f"{kind}_max_limit")
            if not limit:
                continue
            fraction = state[used_key] / limit
            bars.append(
                {
                    "owner": _owner_label(row),
                    "kind": f"{kind}s",
                    "used": state[used_key],
                    "limit": limit,
                    "percent": min(fraction * 100, 100),
                    "level": charts.usage_level(fraction),
                    "duration": getattr(row, f"{kind}_reset_duration"),
                    "resets_at": state.get(f"{kind}_resets_at"),
                }
            )
    return sorted(bars, key=lambda bar: -bar["percent"])


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    _require_view_usage(request)
    form = UsageFilterForm(request.GET or None)
    context = {**admin.site.each_context(request), "title": "Usage dashboard", "form": form}
    if request.GET and not form.is_valid():
        return render(request, "governance/dashboard.html", context, status=400)
    if not request.GET:
        form = UsageFilterForm({})
        form.is_valid()
        context["form"] = form
    usage = form.usage_filter()
    days = reports.daily(usage, form.days)
    labels = [day["day"].strftime("%m-%d") for day in days]
    context.update(
        {
            "totals": reports.totals(usage),
            "spend_chart": charts.bar_chart(
                labels, [d["cost"] for d in days], title="Spend per day (USD)", fmt=charts.money
            ),
            "token_chart": charts.bar_chart(
                labels, [d["tokens"] for d in days], title="Tokens per day", fmt=charts.tokens, color="#79aec8"
            ),
            "top_virtual_keys": reports.top(usage, "virtual_key"),
            "top_teams": reports.top(usage, "team"),
            "top_customers": reports.top(usage, "customer"),
            "by_model": reports.by_model(usage),
            "unpriced": reports.unpriced(usage),
            "budget_bars": budget_bars(),
            "rate_limit_bars": rate_limit_bars(),
            "query": request.GET.urlencode(),
        }
    )
    return render(request, "governance/dashboard.html", context)


class _Echo:
    def write(self, value: str) -> str:
        return value


# What a spreadsheet may read as the start of a formula (OWASP's CSV injection list; a leading TAB
# or CR is skipped by some spreadsheets before they look for "=").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> str:
    # Neutralise spreadsheet formulas in text cells (CSV injection through model names etc.).
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in FORMULA_STARTS and not isinstance(value, int | Decimal) else text


@staff_member_required
def usage_csv(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    _require_view_usage(request)
    form = UsageFilterForm(request.GET or {})
    if not form.is_valid():
        errors = "; ".join(f"{field}: {' '.join(str(msg) for msg in msgs)}" for field, msgs in form.errors.items())
        return HttpResponse(f"invalid filters: {errors}\n", status=400, content_type="text/plain")
    records = form.records().select_related("virtual_key", "team", "customer").order_by("created_at", "pk")
    writer = csv.writer(_Echo())

    def rows() -> Iterator[str]:
        yield writer.writerow(CSV_COLUMNS)
        for record in records.iterator(chunk_size=2000):
            yield writer.writerow(
                [
                    _csv_cell(value)
                    for value in (
                        record.created_at.isoformat(),
                        record.request_id,
                        record.virtual_key.name if record.virtual_key else "",
                        record.team.name if record.team else "",
                        record.customer.name if record.customer else "",
                        record.provider,
                        record.model,
                        record.request_type,
                        record.status_code,
                        record.prompt_tokens,
                        record.completion_tokens,
                        record.cached_tokens,
                        record.total_tokens,
                        record.cost,
                        record.latency_ms,
                        record.streamed,
                        record.priced,
                        record.price_source or "",
                    )
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="usage.csv"'
    return response
