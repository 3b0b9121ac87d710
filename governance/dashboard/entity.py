"""The spend panel on the admin change pages of VKs, teams and customers: totals and a chart of
the last 30 days. Budgets are not repeated here: each page's budget rows show their live use."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

from django.contrib.admin.utils import unquote
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils import timezone

from governance.dashboard import charts, reports
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
    its ledger column)."""
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


def spend_panel(obj: PanelOwner, field: str) -> str:
    """HTML for the last ``DAYS`` days of ``obj``'s spend (``field`` names its ledger column)."""
    noun = {"virtual_key": "key", "team": "team", "customer": "customer"}[field]
    return render_to_string("admin/governance/spend_panel.html", {**spend_context(obj, field), "noun": noun})


class UsagePanelMixin(_PanelMixinBase[PanelOwnerT]):
    """Adds ``spend_panel`` to the change page context; ``usage_field`` names the ledger column."""

    usage_field: str

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        obj = self.get_object(request, unquote(object_id)) if object_id else None
        if obj is not None:
            extra_context["spend_panel"] = spend_panel(obj, self.usage_field)
        return super().change_view(request, object_id, form_url, extra_context)
