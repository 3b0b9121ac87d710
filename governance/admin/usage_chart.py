"""The charts above the usage records list: requests (with errors and refusals) and spend over
the time range of the current selection, in buckets that suit its length.

The range is the one the filters chose (``since``, the ``created_at`` filter, the date
drill-down); without one, from the selection's first request (at most ``MAX_DAYS`` back) to now,
and at least a day. Buckets: five minutes up to three hours, hours up to two days, days up to
``MAX_DAYS``, months beyond. Every figure is the filtered queryset's own; when the filters are
ones the rollups key on, they are read from the rollups (``governance.usage_stats``), exact too.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour, TruncMinute, TruncMonth
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from governance import usage_stats
from governance.dashboard import charts
from governance.models import UsageRecord
from governance.models.usage import REFUSAL_TYPES
from governance.usage_stats import UsageFilter

MAX_DAYS = 92
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
MINUTES5, HOUR, DAY_STEP, MONTH = "5 minutes", "hour", "day", "month"
CHART_WIDTH, CHART_HEIGHT = 420, 150
ERROR_COLOR, REFUSED_COLOR, OK_COLOR = "#c83232", "#e0a100", "#417690"

# The list's query parameters the rollups can answer (anything else reads the ledger): the
# filters they key on, the time range, and the list's own paging and sorting.
ROLLUP_PARAMS = frozenset(
    {
        "since",
        "outcome",
        "provider__exact",
        "model__exact",
        "virtual_key__id__exact",
        "team__id__exact",
        "customer__id__exact",
        "created_at__gte",
        "created_at__lt",
        "created_at__year",
        "created_at__month",
        "created_at__day",
        "o",
        "p",
    }
)


@dataclass
class Bucket:
    start: datetime
    requests: int = 0
    errors: int = 0
    refused: int = 0
    tokens: int = 0
    cost: Decimal = field(default_factory=Decimal)


def _moment(value: str) -> datetime | None:
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            day = parse_date(value)
            parsed = datetime(day.year, day.month, day.day) if day else None
    except ValueError:
        return None
    if parsed is None:
        return None
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


def _drilldown(params: Mapping[str, str]) -> tuple[datetime | None, datetime | None]:
    """The range of the date hierarchy's ``created_at__year`` / ``__month`` / ``__day``."""
    try:
        year = int(params["created_at__year"])
        month = int(params.get("created_at__month") or 0)
        day = int(params.get("created_at__day") or 0)
        if day:
            start = datetime(year, month, day, tzinfo=UTC)
            return start, start + timedelta(days=1)
        if month:
            start = datetime(year, month, 1, tzinfo=UTC)
            return start, _next(start, MONTH)
        return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    except (KeyError, ValueError, OverflowError):
        return None, None


def selection_range(params: Mapping[str, str], now: datetime) -> tuple[datetime | None, datetime | None]:
    """The time range the filters in ``params`` select: ``(start, end)``, each None when open."""
    starts: list[datetime] = []
    ends: list[datetime] = []
    if params.get("since") in SINCE:
        starts.append(now - SINCE[params["since"]])
    for name, into in (("created_at__gte", starts), ("created_at__lt", ends)):
        moment = _moment(params.get(name, ""))
        if moment is not None:
            into.append(moment)
    low, high = _drilldown(params)
    starts += [low] if low else []
    ends += [high] if high else []
    return (max(starts) if starts else None), (min(ends) if ends else None)


def step_for(span: timedelta) -> str:
    if span <= timedelta(hours=3):
        return MINUTES5
    if span <= timedelta(days=2):
        return HOUR
    if span <= timedelta(days=MAX_DAYS):
        return DAY_STEP
    return MONTH


def _floor(moment: datetime, step: str) -> datetime:
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    if step == MINUTES5:
        return moment.replace(minute=moment.minute - moment.minute % 5)
    moment = moment.replace(minute=0)
    if step == HOUR:
        return moment
    moment = moment.replace(hour=0)
    return moment if step == DAY_STEP else moment.replace(day=1)


def _next(moment: datetime, step: str) -> datetime:
    if step == MONTH:
        return (
            moment.replace(year=moment.year + 1, month=1)
            if moment.month == 12
            else moment.replace(month=moment.month + 1)
        )
    return moment + {MINUTES5: timedelta(minutes=5), HOUR: timedelta(hours=1), DAY_STEP: timedelta(days=1)}[step]


def _rollup_filter(params: Mapping[str, str], start: datetime, end: datetime) -> UsageFilter | None:
    """The list's filters as a ``UsageFilter`` when the rollups can answer them, else None."""
    if not set(params) <= ROLLUP_PARAMS:
        return None
    try:
        return UsageFilter(
            start=start,
            end=end,
            providers=[params["provider__exact"]] if "provider__exact" in params else [],
            models=[params["model__exact"]] if "model__exact" in params else [],
            virtual_key_ids=[uuid.UUID(params[n]) for n in ("virtual_key__id__exact",) if n in params],
            team_ids=[uuid.UUID(params[n]) for n in ("team__id__exact",) if n in params],
            customer_ids=[uuid.UUID(params[n]) for n in ("customer__id__exact",) if n in params],
            statuses=[params["outcome"]] if params.get("outcome") in usage_stats.STATUSES else [],
        )
    except ValueError:
        return None


def _first_request(queryset: QuerySet[UsageRecord]) -> datetime | None:
    # One indexed read (``created_at``, or a key's, team's or customer's index).
    first: datetime | None = queryset.order_by().aggregate(m=Min("created_at"))["m"]
    return first


TRUNC = {MINUTES5: TruncMinute, HOUR: TruncHour, DAY_STEP: TruncDay, MONTH: TruncMonth}


def _from_ledger(queryset: QuerySet[UsageRecord], start: datetime, end: datetime, step: str) -> dict[datetime, Bucket]:
    refusal = Q(error_type__in=REFUSAL_TYPES)
    rows = (
        queryset.filter(created_at__gte=start, created_at__lt=end)
        .order_by()
        .annotate(when=TRUNC[step]("created_at", tzinfo=UTC))
        .values("when")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status_code__gte=400) & ~refusal),
            refused=Count("id", filter=refusal),
            tokens=Sum("total_tokens"),
            cost=Sum("cost"),
        )
    )
    found: dict[datetime, Bucket] = {}
    for row in rows:
        bucket = found.setdefault(_floor(row["when"], step), Bucket(_floor(row["when"], step)))
        bucket.requests += row["requests"]
        bucket.errors += row["errors"]
        bucket.refused += row["refused"]
        bucket.tokens += row["tokens"] or 0
        bucket.cost += Decimal(row["cost"] or 0)
    return found


def _from_rollups(f: UsageFilter, step: str) -> dict[datetime, Bucket]:
    seconds = usage_stats.HOUR_SECONDS if step == HOUR else usage_stats.DAY_SECONDS
    found: dict[datetime, Bucket] = {}
    for (when, _), part in usage_stats.figures(f, bucket=seconds).items():
        start = _floor(when, step)
        bucket = found.setdefault(start, Bucket(start))
        bucket.requests += part.requests
        bucket.errors += part.errors
        bucket.refused += part.refused
        bucket.tokens += part.total_tokens
        bucket.cost += part.cost
    return found


@dataclass(frozen=True)
class Series:
    start: datetime
    end: datetime
    step: str
    buckets: list[Bucket]
    source: str  # "rollups" or "ledger"
    capped: bool  # no range was chosen and the selection is older than MAX_DAYS: its last MAX_DAYS


def series(queryset: QuerySet[UsageRecord], params: Mapping[str, str], now: datetime | None = None) -> Series | None:
    """The zero-filled buckets of ``queryset`` (the filtered list) over its range; None when empty."""
    now = now or timezone.now()
    start, end = selection_range(params, now)
    end = end or now
    first = _first_request(queryset)
    if first is None:
        return None
    capped = False
    if start is None:
        capped = first < end - timedelta(days=MAX_DAYS)
        start = max(first, end - timedelta(days=MAX_DAYS))
        start = min(start, end - timedelta(days=1))  # an open range is at least a day: hours, not minutes
    if start >= end:
        return None
    step = step_for(end - start)
    first_bucket = _floor(start, step)
    rollups = _rollup_filter(params, start, end)
    if rollups is not None and step in (HOUR, DAY_STEP, MONTH):
        # From the first request the ledger still holds, not the range's start: the rollups keep
        # the days ``purge_usage`` deleted, the list does not show them, and the chart must not.
        rollups.start = max(start, first)
        found = _from_rollups(rollups, step)
        source = "rollups"
    else:
        found = _from_ledger(queryset, start, end, step)
        source = "ledger"
    buckets: list[Bucket] = []
    moment = first_bucket
    while moment < end and len(buckets) < 400:
        buckets.append(found.get(moment, Bucket(moment)))
        moment = _next(moment, step)
    return Series(start, end, step, buckets, source, capped)


LABELS = {MINUTES5: "%H:%M", HOUR: "%H:%M", DAY_STEP: "%m-%d", MONTH: "%Y-%m"}
TIPS = {MINUTES5: "%Y-%m-%d %H:%M", HOUR: "%Y-%m-%d %H:00", DAY_STEP: "%Y-%m-%d", MONTH: "%Y-%m"}


def _label(bucket: Bucket, step: str, index: int) -> str:
    # Over two days of hours, midnight says which day it starts.
    if step == HOUR and bucket.start.hour == 0 and index:
        return bucket.start.strftime("%m-%d")
    return bucket.start.strftime(LABELS[step])


def charts_context(data: Series) -> dict[str, Any]:
    """The template values: both charts and the caption naming the range and bucket size."""
    steps = data.step
    labels = [_label(b, steps, i) for i, b in enumerate(data.buckets)]
    tips = [
        f"{b.start:{TIPS[steps]}} UTC: {b.requests:,} requests ({b.errors:,} errors, {b.refused:,} refused), "
        f"{charts.money(b.cost)}, {b.tokens:,} tokens"
        for b in data.buckets
    ]
    requests = charts.bar_chart(
        labels,
        [b.requests for b in data.buckets],
        title=f"Requests per {steps}",
        fmt=lambda v: f"{int(v):,}",
        color=OK_COLOR,
        tips=tips,
        stacks=[
            ("refused", REFUSED_COLOR, [b.refused for b in data.buckets]),
            ("errors", ERROR_COLOR, [b.errors for b in data.buckets]),
        ],
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
    )
    spend = charts.bar_chart(
        labels,
        [b.cost for b in data.buckets],
        title=f"Spend per {steps} (USD)",
        fmt=charts.money,
        tips=tips,
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
    )
    return {
        "requests_chart": requests,
        "spend_chart": spend,
        "chart_step": steps,
        "chart_range": _range_text(data),
        "chart_bars": len(data.buckets),
    }


def _range_text(data: Series) -> str:
    text = f"{data.start:%Y-%m-%d %H:%M} to {data.end:%Y-%m-%d %H:%M} UTC, per {data.step}"
    if data.capped:
        text += f" (the last {MAX_DAYS} days of this selection)"
    return text
