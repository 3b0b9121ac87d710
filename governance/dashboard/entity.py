"""Spend chart and live budget state on the admin change pages of VKs, teams and customers."""

from __future__ import annotations

from datetime import timedelta

from django.template.loader import render_to_string
from django.utils import timezone

from governance.dashboard import charts, reports
from governance.dashboard.views import budget_bar
from governance.metering.live import live_usage
from governance.models import UsageRecord

DAYS = 30


def usage_panel(obj, field: str) -> str:
    """HTML for the last 30 days of ``obj``'s spend and its budgets' current windows."""
    today = timezone.now().date()
    days = [today - timedelta(days=n) for n in range(DAYS - 1, -1, -1)]
    since = timezone.now() - timedelta(days=DAYS)
    records = UsageRecord.objects.filter(**{field: obj}, created_at__gte=since)
    series = reports.daily(records, days)
    budgets = list(obj.budgets.all())
    usage = live_usage(budgets, [])
    bars = [budget_bar(budget, usage[("budget", budget.pk)]) for budget in budgets]
    return render_to_string(
        "governance/usage_panel.html",
        {
            "totals": reports.totals(records),
            "chart": charts.bar_chart(
                [d["day"].strftime("%m-%d") for d in series],
                [d["cost"] for d in series],
                title=f"Spend per day, last {DAYS} days",
                fmt=charts.money,
            ),
            "budget_bars": bars,
            "days": DAYS,
        },
    )


class UsagePanelMixin:
    """Adds ``usage_panel`` to the change page context; ``usage_field`` names the ledger column."""

    usage_field: str

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        obj = self.get_object(request, object_id) if object_id else None
        if obj is not None:
            extra_context["usage_panel"] = usage_panel(obj, self.usage_field)
        return super().change_view(request, object_id, form_url, extra_context)
