"""The dashboard's figures, read from the usage rollups (``governance.usage_stats``), never by
scanning the ledger: a dashboard over millions of usage records costs a few small queries."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from governance import usage_stats
from governance.models import Customer, Team, VirtualKey
from governance.usage_stats import Figures, UsageFilter

NAMES: dict[str, type[VirtualKey] | type[Team] | type[Customer]] = {
    "virtual_key": VirtualKey,
    "team": Team,
    "customer": Customer,
}


def _row(part: Figures) -> dict[str, Any]:
    return {
        "cost": part.cost,
        "tokens": part.total_tokens,
        "requests": part.requests,
        "errors": part.errors,
        "refused": part.refused,
        "error_rate": part.error_rate,
    }


def totals(f: UsageFilter) -> dict[str, Any]:
    part = usage_stats.total(f)
    return {
        "requests": part.requests,
        "cost": part.cost,
        "prompt_tokens": part.prompt_tokens,
        "completion_tokens": part.completion_tokens,
        "total_tokens": part.total_tokens,
        "errors": part.errors,
        "refused": part.refused,
        "error_rate": part.error_rate,
        "average_latency": part.average_latency,
    }


def daily(f: UsageFilter, days: list[date]) -> list[dict[str, Any]]:
    """One row per day in ``days`` (zero-filled): date, cost, tokens, requests."""
    found = {when.date(): part for (when, _), part in usage_stats.figures(f, bucket=usage_stats.DAY_SECONDS).items()}
    empty = Figures()
    return [{"day": day, **_row(found.get(day, empty))} for day in days]


def over_time(f: UsageFilter, days: list[date]) -> tuple[str, list[dict[str, Any]]]:
    """``("hour", rows)`` for a range of two days or less (24 or 48 bars), else ``("day", rows)``:
    each row the bucket's ``start`` and its figures, zero-filled."""
    if len(days) > 2:
        return "day", [{"start": datetime.combine(row["day"], time.min, tzinfo=UTC), **row} for row in daily(f, days)]
    found = {when: part for (when, _), part in usage_stats.figures(f, bucket=usage_stats.HOUR_SECONDS).items()}
    first = datetime.combine(days[0], time.min, tzinfo=UTC)
    hours = [first + timedelta(hours=n) for n in range(24 * len(days))]
    return "hour", [{"start": hour, **_row(found.get(hour, Figures()))} for hour in hours]


def top(f: UsageFilter, field: str, limit: int = 10) -> list[dict[str, Any]]:
    """Top entities by spend: ``field`` is ``virtual_key``, ``team`` or ``customer``. An entity
    deleted since is named ``(deleted)``: its usage stays."""
    ranked = [(value, part) for value, part in usage_stats.breakdown(f, f"{field}_id") if value is not None][:limit]
    names = dict(NAMES[field].objects.filter(pk__in=[v for v, _ in ranked]).values_list("pk", "name"))
    return [
        {f"{field}__id": value, f"{field}__name": names.get(_uuid(value), "(deleted)"), **_row(part)}
        for value, part in ranked
    ]


def by_model(f: UsageFilter, limit: int = 20) -> list[dict[str, Any]]:
    """Spend, tokens, requests, errors, refusals and average latency per provider and model."""
    return [
        {"provider": provider, "model": model, **_row(part), "average_latency": part.average_latency}
        for (provider, model), part in usage_stats.breakdown(f, ("provider", "model"))[:limit]
    ]


def by_provider(f: UsageFilter, limit: int = 10) -> list[dict[str, Any]]:
    """The same per provider."""
    return [
        {"provider": provider, **_row(part), "average_latency": part.average_latency}
        for provider, part in usage_stats.breakdown(f, "provider")[:limit]
    ]


def unpriced(f: UsageFilter) -> list[dict[str, Any]]:
    """Models that were served without a price (charged 0): a visible budget bypass."""
    rows = [
        {"provider": provider, "model": model, "requests": part.unpriced, "tokens": part.total_tokens}
        for (provider, model), part in usage_stats.breakdown(f, ("provider", "model"))
        if part.unpriced
    ]
    return sorted(rows, key=lambda row: (-row["requests"], row["provider"], row["model"]))


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
