"""The admin index's headline figures: what a platform admin asks first, each with the filtered
list that answers the next question.

Spend and request figures come from the rollups (``governance.usage_stats``: a few rows, whatever
the ledger's size); the key counts from the live counters (``governance.selectors``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone

from governance import selectors
from governance.dashboard.charts import money
from governance.dashboard.links import dashboard_url
from governance.usage_stats import UsageFilter, total


@dataclass(frozen=True)
class Tile:
    """One headline figure: its label, value, a line under it, the list behind it, and a tone
    (``ok``, ``warn`` or ``over``) when the figure needs attention."""

    id: str
    label: str
    value: str
    note: str
    url: str
    tone: str = ""


def _usage_list(**params: str) -> str:
    return reverse("admin:governance_usagerecord_changelist") + "?" + urlencode(params)


def _key_list(**params: str) -> str:
    return reverse("admin:governance_virtualkey_changelist") + "?" + urlencode(params)


def _dashboard(start: datetime, end: datetime) -> str:
    return dashboard_url({"start": start.date(), "end": end.date()})


def tiles(now: datetime | None = None) -> list[Tile]:
    now = now or timezone.now()
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    day = total(UsageFilter(start=today, end=now + timedelta(seconds=1)))
    this_month = total(UsageFilter(start=month, end=now + timedelta(seconds=1)))
    hour = total(UsageFilter(start=now - timedelta(hours=1), end=now + timedelta(seconds=1)))
    unpriced = total(UsageFilter(start=now - timedelta(hours=24), end=now + timedelta(seconds=1))).unpriced
    near_budget = selectors.virtual_keys_at_budget_use(90).count()
    limited = selectors.virtual_keys_rate_limited_now().count()
    # Upstream and gateway errors only: governance's refusals are their own figure (and list).
    error_rate = round(100 * hour.errors / hour.requests, 2) if hour.requests else 0.0
    return [
        Tile(
            "spend-today",
            "Spend today",
            money(day.cost),
            f"{day.requests:,} request{'' if day.requests == 1 else 's'} since 00:00 UTC",
            _dashboard(today, now),
        ),
        Tile(
            "spend-month",
            "Spend this month",
            money(this_month.cost),
            f"since {month:%Y-%m-%d} (UTC)",
            _dashboard(month, now),
        ),
        Tile(
            "requests-hour",
            "Requests, last hour",
            f"{hour.requests:,}",
            f"average latency {hour.average_latency:,.0f} ms",
            _usage_list(since="1h"),
        ),
        Tile(
            "errors-hour",
            "Error rate, last hour",
            f"{error_rate:g} %",
            f"{hour.errors:,} failed upstream or here",
            _usage_list(since="1h", outcome="error"),
            "over" if error_rate >= 5 else ("warn" if hour.errors else "ok"),
        ),
        Tile(
            "refused-hour",
            "Refused, last hour",
            f"{hour.refused:,}",
            "by budgets, limits, access rules",
            _usage_list(since="1h", outcome="refused"),
            "warn" if hour.refused else "ok",
        ),
        Tile(
            "keys-near-budget",
            "Keys at ≥ 90 % of a budget",
            f"{near_budget:,}",
            "their own budgets, live",
            _key_list(budget_use="90"),
            "warn" if near_budget else "ok",
        ),
        Tile(
            "keys-rate-limited",
            "Keys rate-limited now",
            f"{limited:,}",
            "at a request or token limit",
            _key_list(rate_limited="now"),
            "warn" if limited else "ok",
        ),
        Tile(
            "unpriced",
            "Unpriced requests, 24 h",
            f"{unpriced:,}",
            "models without a price",
            _usage_list(priced__exact="0", since="24h"),
            "over" if unpriced else "ok",
        ),
    ]
