"""Aggregations over the usage ledger (reads only)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from django.db.models import Count, DecimalField, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDate

from governance.models import UsageRecord

ZERO = Value(Decimal("0"), output_field=DecimalField(max_digits=24, decimal_places=10))


def totals(records: QuerySet[UsageRecord]) -> dict:
    return records.aggregate(
        requests=Count("pk"),
        cost=Coalesce(Sum("cost"), ZERO),
        prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
        completion_tokens=Coalesce(Sum("completion_tokens"), 0),
        total_tokens=Coalesce(Sum("total_tokens"), 0),
    )


def daily(records: QuerySet[UsageRecord], days: list[date]) -> list[dict]:
    """One row per day in ``days`` (zero-filled): date, cost, tokens, requests."""
    rows = (
        records.annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(cost=Coalesce(Sum("cost"), ZERO), tokens=Coalesce(Sum("total_tokens"), 0), requests=Count("pk"))
    )
    by_day = {row["day"]: row for row in rows}
    return [
        {
            "day": day,
            "cost": by_day.get(day, {}).get("cost", Decimal("0")),
            "tokens": by_day.get(day, {}).get("tokens", 0),
            "requests": by_day.get(day, {}).get("requests", 0),
        }
        for day in days
    ]


def top(records: QuerySet[UsageRecord], field: str, limit: int = 10) -> list[dict]:
    """Top entities by spend: ``field`` is ``virtual_key``, ``team`` or ``customer``."""
    return list(
        records.filter(**{f"{field}__isnull": False})
        .values(f"{field}__id", f"{field}__name")
        .annotate(cost=Coalesce(Sum("cost"), ZERO), tokens=Coalesce(Sum("total_tokens"), 0), requests=Count("pk"))
        .order_by("-cost", f"{field}__name")[:limit]
    )


def unpriced(records: QuerySet[UsageRecord]) -> list[dict]:
    """Models that were served without a price (charged 0): a visible budget bypass."""
    return list(
        records.filter(priced=False)
        .values("provider", "model")
        .annotate(requests=Count("pk"), tokens=Coalesce(Sum("total_tokens"), 0))
        .order_by("-requests", "provider", "model")
    )
