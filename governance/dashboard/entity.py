"""Spend chart and live budget state on the admin change pages of VKs, teams and customers."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils import timezone

from governance.dashboard import charts, reports
from governance.dashboard.views import budget_bar
from governance.metering.live import live_usage
from governance.models import Customer, Team, VirtualKey
from governance.usage_stats import UsageFilter

DAYS = 30

# The rows whose change page shows the panel: each has ``budgets`` and a ``usage_field`` column.
PanelOwner: TypeAlias = VirtualKey | Team | Customer
PanelOwnerT = TypeVar("PanelOwnerT", bound=PanelOwner)

if TYPE_CHECKING:
    # Checked as the ``ModelAdmin`` it is always mixed into, so ``get_object`` and ``super()`` are known.
    from django.contrib.admin import ModelAdmin as _PanelMixinBase
else:
    _PanelMixinBase = Generic  # at runtime a plain mixin; ``Generic`` only makes it subscriptable


def spend_context(obj: PanelOwner, field: str) -> dict[str, Any]:
    """``obj``'s spend over the last ``DAYS`` days: totals and a chart per day (``field`` names
    its ledger column); what both change-page panels show."""
    today = timezone.now().date()
    days = [today - timedelta(days=n) for n in range(DAYS - 1, -1, -1)]
    mine = UsageFilter(start=datetime.combine(days[0], time.min, tzinfo=UTC))
    {"virtual_key": mine.virtual_key_ids, "team": mine.team_ids, "customer": mine.customer_ids}[field].append(obj.pk)
    series = reports.daily(mine, days)
    return {
        "totals": reports.totals(mine),
        "chart": charts.bar_chart(
            [d["day"].strftime("%m-%d") for d in series],
            [d["cost"] for d in series],
            title=f"Spend per day, last {DAYS} days",
            fmt=charts.money,
        ),
        "days": DAYS,
    }


def usage_panel(obj: PanelOwner, field: str) -> str:
    """HTML for the last 30 days of ``obj``'s spend and its budgets' current windows."""
    budgets = list(obj.budgets.all())
    live = live_usage(budgets, [])
    bars = [budget_bar(budget, live[("budget", budget.pk)]) for budget in budgets]
    return render_to_string("governance/usage_panel.html", {**spend_context(obj, field), "budget_bars": bars})


class UsagePanelMixin(_PanelMixinBase[PanelOwnerT]):
    """Adds ``usage_panel`` to the change page context; ``usage_field`` names the ledger column."""

    usage_field: str

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        obj = self.get_object(request, object_id) if object_id else None
        if obj is not None:
            extra_context["usage_panel"] = usage_panel(obj, self.usage_field)
        return super().change_view(request, object_id, form_url, extra_context)
