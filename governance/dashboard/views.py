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
from governance.dashboard import charts, links, reports
from governance.dashboard.filters import UsageFilterForm
from governance.metering.live import live_usage
from governance.models import Budget, RateLimit

# Three charts side by side on a wide screen: drawn near the size they are shown at, so the
# axis labels stay readable.
CHART_WIDTH, CHART_HEIGHT = 360, 170

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
    # Shown with the dates in force (the defaults filled in), so the range is never a guess.
    dates = {"start": form.cleaned_data["start"].isoformat(), "end": form.cleaned_data["end"].isoformat()}
    context["form"] = shown = UsageFilterForm(request.GET.dict() | dates)
    shown.is_valid()
    usage = form.usage_filter()
    data = form.cleaned_data
    step, series = reports.over_time(usage, form.days)
    labels = [_bucket_label(row["start"], step, index) for index, row in enumerate(series)]
    tips = [_tip(row, step) for row in series]
    top = {field: _linked(data, reports.top(usage, field), field) for field in ("virtual_key", "team", "customer")}
    context.update(
        {
            "totals": reports.totals(usage),
            "step": step,
            "requests_chart": charts.bar_chart(
                labels,
                [row["requests"] for row in series],
                title=f"Requests per {step}",
                fmt=lambda v: f"{int(v):,}",
                tips=tips,
                stacks=[
                    ("refused", "#e0a100", [row["refused"] for row in series]),
                    ("errors", "#c83232", [row["errors"] for row in series]),
                ],
                width=CHART_WIDTH,
                height=CHART_HEIGHT,
            ),
            "spend_chart": charts.bar_chart(
                labels,
                [row["cost"] for row in series],
                title=f"Spend per {step} (USD)",
                fmt=charts.money,
                tips=tips,
                width=CHART_WIDTH,
                height=CHART_HEIGHT,
            ),
            "token_chart": charts.bar_chart(
                labels,
                [row["tokens"] for row in series],
                title=f"Tokens per {step}",
                fmt=charts.tokens,
                color="#79aec8",
                tips=tips,
                width=CHART_WIDTH,
                height=CHART_HEIGHT,
            ),
            "top_virtual_keys": top["virtual_key"],
            "top_teams": top["team"],
            "top_customers": top["customer"],
            "by_model": [
                row
                | {
                    "url": links.dashboard_url(data, provider=row["provider"], model=row["model"]),
                    "provider_url": links.dashboard_url(data, provider=row["provider"]),
                    "logs_url": links.logs_url(data, provider=row["provider"], model=row["model"]),
                }
                for row in reports.by_model(usage)
            ],
            "by_provider": [
                row
                | {
                    "url": links.dashboard_url(data, provider=row["provider"]),
                    "logs_url": links.logs_url(data, provider=row["provider"]),
                }
                for row in reports.by_provider(usage)
            ],
            "logs_url": links.logs_url(data),
            "errors_url": links.logs_url(data, outcome="error"),
            "refused_url": links.logs_url(data, outcome="refused"),
            "narrowed_to": _narrowed_to(data),
            "unpriced": reports.unpriced(usage),
            "budget_bars": budget_bars(),
            "rate_limit_bars": rate_limit_bars(),
            "query": request.GET.urlencode(),
        }
    )
    return render(request, "governance/dashboard.html", context)


def _tip(row: dict[str, Any], step: str) -> str:
    when = f"{row['start']:%Y-%m-%d %H:00 UTC}" if step == "hour" else f"{row['start']:%Y-%m-%d}"
    return (
        f"{when}: {row['requests']:,} requests ({row['errors']:,} errors, {row['refused']:,} refused), "
        f"{charts.money(row['cost'])}, {row['tokens']:,} tokens"
    )


def _bucket_label(start: datetime, step: str, index: int) -> str:
    if step == "day":
        return start.strftime("%m-%d")
    return start.strftime("%m-%d") if start.hour == 0 and index else start.strftime("%H:%M")


def _linked(data: dict[str, Any], rows: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """Top rows with their links: the dashboard narrowed to the entity, its logs, its admin page."""
    out = []
    for row in rows:
        pk = row[f"{field}__id"]
        out.append(
            row
            | {
                "url": links.dashboard_url(data, **{field: pk}),
                "logs_url": links.logs_url(data, **{field: pk}),
                "admin_url": links.admin_url(field, pk) if row[f"{field}__name"] != "(deleted)" else "",
            }
        )
    return out


def _narrowed_to(data: dict[str, Any]) -> list[dict[str, str]]:
    """The active filters other than dates, each with its own admin page where it has one."""
    out = []
    for field, label in (("virtual_key", "VK"), ("team", "team"), ("customer", "customer")):
        if data.get(field):
            out.append({"label": f"{label} {data[field].name}", "url": links.admin_url(field, data[field].pk)})
    for field in ("provider", "model"):
        if data.get(field):
            out.append({"label": f"{field} {data[field]}", "url": ""})
    return out


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
