"""Usage figures for a filter: totals, a histogram over time and breakdowns, read from the
hourly and daily rollups (``governance.metering.rollups``) wherever they can answer, and from the
ledger only for what they cannot. Shared by ``/api/logs/stats``, the self-service usage endpoint
and the admin dashboard.

A time range is cut into segments: whole UTC days read daily rollups (when the histogram is by
day), whole hours hourly rollups, and the partial hours at its edges the ledger itself (a few
minutes of rows). The figures are exact: the rollups are kept in the ledger's own transactions.
A filter the rollups do not key on (latency, token or cost ranges, a provider key, a request id,
error types, streamed or not, a content search) is answered from the ledger over the range; an index on
``created_at`` bounds that scan to the range.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from governance.metering.rollups import ledger_sums
from governance.models import RequestContent, UsageRecord, UsageRollup
from governance.models.rollups import COST_UNIT, DAY, HOUR, NONE, SUMS
from governance.models.usage import REFUSAL_TYPES

STATUSES = ("success", "error", "refused")
HOUR_SECONDS, DAY_SECONDS = 3600, 86400


@dataclass
class UsageFilter:
    start: datetime | None = None
    end: datetime | None = None  # exclusive
    providers: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    virtual_key_ids: list[uuid.UUID] = field(default_factory=list)
    team_ids: list[uuid.UUID] = field(default_factory=list)
    customer_ids: list[uuid.UUID] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)  # of STATUSES
    status_codes: list[int] = field(default_factory=list)
    # Only the ledger knows these.
    selected_key_ids: list[uuid.UUID] = field(default_factory=list)
    request_id: str = ""
    error_types: list[str] = field(default_factory=list)
    stream: bool | None = None
    min_latency: int | None = None
    max_latency: int | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    min_cost: Decimal | None = None
    max_cost: Decimal | None = None
    content_search: str = ""  # in the stored bodies (content logging)

    @property
    def ledger_only(self) -> bool:
        return bool(
            self.selected_key_ids
            or self.content_search
            or self.request_id
            or self.error_types
            or self.stream is not None
            or any(
                v is not None
                for v in (
                    self.min_latency,
                    self.max_latency,
                    self.min_tokens,
                    self.max_tokens,
                    self.min_cost,
                    self.max_cost,
                )
            )
        )

    def ledger_q(self) -> Q:
        q = Q()
        if self.start is not None:
            q &= Q(created_at__gte=self.start)
        if self.end is not None:
            q &= Q(created_at__lt=self.end)
        q &= self._common("virtual_key_id", "team_id", "customer_id")
        if self.statuses:
            parts = Q()
            refusal = Q(error_type__in=REFUSAL_TYPES)
            if "success" in self.statuses:
                parts |= Q(status_code__gt=0, status_code__lt=400) & ~refusal
            if "error" in self.statuses:
                parts |= (Q(status_code__gte=400) | Q(status_code=0)) & ~refusal
            if "refused" in self.statuses:
                parts |= refusal
            q &= parts
        if self.selected_key_ids:
            q &= Q(provider_key_id__in=self.selected_key_ids)
        if self.request_id:
            q &= Q(http_request_id=self.request_id)
        if self.error_types:
            q &= Q(error_type__in=self.error_types)
        if self.stream is not None:
            q &= Q(streamed=self.stream)
        if self.content_search:
            bodies = RequestContent.objects.filter(
                Q(request_body__icontains=self.content_search) | Q(response_body__icontains=self.content_search)
            )
            if self.start is not None:
                bodies = bodies.filter(created_at__gte=self.start)
            if self.end is not None:
                bodies = bodies.filter(created_at__lt=self.end)
            q &= Q(request_id__in=bodies.values("request_id"))
        for name, column, op in (
            ("min_latency", "latency_ms", "gte"),
            ("max_latency", "latency_ms", "lte"),
            ("min_tokens", "total_tokens", "gte"),
            ("max_tokens", "total_tokens", "lte"),
            ("min_cost", "cost", "gte"),
            ("max_cost", "cost", "lte"),
        ):
            value = getattr(self, name)
            if value is not None:
                q &= Q(**{f"{column}__{op}": value})
        return q

    def rollup_q(self) -> Q:
        q = self._common("virtual_key_id", "team_id", "customer_id")
        if self.statuses:
            parts = Q()
            if "success" in self.statuses:
                parts |= Q(status_code__gt=0, status_code__lt=400, refused=False)
            if "error" in self.statuses:
                parts |= (Q(status_code__gte=400) | Q(status_code=0)) & Q(refused=False)
            if "refused" in self.statuses:
                parts |= Q(refused=True)
            q &= parts
        return q

    def _common(self, vk: str, team: str, customer: str) -> Q:
        q = Q()
        if self.providers:
            q &= Q(provider__in=self.providers)
        if self.models:
            q &= Q(model__in=self.models)
        if self.virtual_key_ids:
            q &= Q(**{f"{vk}__in": self.virtual_key_ids})
        if self.team_ids:
            q &= Q(**{f"{team}__in": self.team_ids})
        if self.customer_ids:
            q &= Q(**{f"{customer}__in": self.customer_ids})
        if self.status_codes:
            q &= Q(status_code__in=self.status_codes)
        return q


@dataclass
class Figures:
    requests: int = 0
    successes: int = 0
    errors: int = 0
    refused: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = Decimal("0")
    latency_ms: int = 0  # summed over the requests
    unpriced: int = 0

    def add(self, other: Figures) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def success_rate(self) -> float:
        return round(100 * self.successes / self.requests, 2) if self.requests else 0.0

    @property
    def average_latency(self) -> float:
        return round(self.latency_ms / self.requests, 1) if self.requests else 0.0

    @property
    def error_rate(self) -> float:
        return round(100 * (self.errors + self.refused) / self.requests, 2) if self.requests else 0.0


def bucket_size(f: UsageFilter) -> int:
    """Hours for a range of two days or less, days beyond."""
    start = f.start or (timezone.now() - timedelta(days=30))
    end = f.end or timezone.now()
    return HOUR_SECONDS if end - start <= timedelta(days=2) else DAY_SECONDS


def _floor(moment: datetime, seconds: int) -> datetime:
    moment = moment.astimezone(UTC)
    if seconds == DAY_SECONDS:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def _ceil(moment: datetime, seconds: int) -> datetime:
    floor = _floor(moment, seconds)
    return floor if floor == moment else floor + timedelta(seconds=seconds)


Segment = tuple[str, datetime | None, datetime | None]


def segments(start: datetime | None, end: datetime | None, by_day: bool) -> list[Segment]:
    """``(source, from, to)`` pieces covering [start, end): ``ledger``, ``h`` or ``d``."""
    out: list[Segment] = []
    hour_start = _ceil(start, HOUR_SECONDS) if start is not None else None
    hour_end = _floor(end, HOUR_SECONDS) if end is not None else None
    if hour_start is not None and hour_end is not None and hour_start >= hour_end:
        return [("ledger", start, end)]
    if start is not None and hour_start != start:
        out.append(("ledger", start, hour_start))
    if by_day:
        day_start = _ceil(hour_start, DAY_SECONDS) if hour_start is not None else None
        day_end = _floor(hour_end, DAY_SECONDS) if hour_end is not None else None
        if day_start is None or day_end is None or day_start < day_end:
            if hour_start is not None and day_start != hour_start:
                out.append((HOUR, hour_start, day_start))
            out.append((DAY, day_start, day_end))
            if hour_end is not None and day_end != hour_end:
                out.append((HOUR, day_end, hour_end))
        else:
            out.append((HOUR, hour_start, hour_end))
    else:
        out.append((HOUR, hour_start, hour_end))
    if end is not None and hour_end != end:
        out.append(("ledger", hour_end, end))
    return out


By = str | tuple[str, ...] | None


def _by_columns(by: By) -> list[str]:
    return [] if by is None else [by] if isinstance(by, str) else list(by)


def _by_value(row: dict[str, Any], by: By) -> Any:
    if by is None:
        return None
    if isinstance(by, str):
        value = row[by]
        return None if value == NONE else value
    return tuple(None if row[c] == NONE else row[c] for c in by)


def figures(f: UsageFilter, *, by: By = None, bucket: int | None = None) -> dict[Any, Figures]:
    """Figures per group: ``by`` a column (``model``, ``provider``, ``virtual_key_id``,
    ``team_id``, ``customer_id``), a tuple of them, or None; ``bucket`` seconds (hour or day) or
    None. The group key is ``(bucket start or None, by value (a tuple for a tuple) or None)``."""
    out: dict[Any, Figures] = {}
    if f.ledger_only:
        _ledger(f, f.start, f.end, by, bucket, out)
        return out
    for source, lo, hi in segments(f.start, f.end, by_day=bucket == DAY_SECONDS or bucket is None):
        if source == "ledger":
            _ledger(f, lo, hi, by, bucket, out)
        else:
            _rollups(f, source, lo, hi, by, bucket, out)
    return out


def total(f: UsageFilter) -> Figures:
    result = Figures()
    for part in figures(f).values():
        result.add(part)
    return result


def merge(out: dict[Any, Figures], key: Any, part: Figures) -> None:
    """Add ``part`` to ``out[key]`` (``part`` itself when the key is new)."""
    found = out.get(key)
    if found is None:
        out[key] = part
    else:
        found.add(part)


def _rollups(
    f: UsageFilter,
    granularity: str,
    lo: datetime | None,
    hi: datetime | None,
    by: By,
    bucket: int | None,
    out: dict[Any, Figures],
) -> None:
    rows = UsageRollup.objects.filter(f.rollup_q(), granularity=granularity)
    if lo is not None:
        rows = rows.filter(bucket__gte=lo)
    if hi is not None:
        rows = rows.filter(bucket__lt=hi)
    group = ["status_code", "refused", *_by_columns(by)]
    if bucket is not None:
        group.append("bucket")
    sums = rows.values(*group).annotate(**{name: Sum(name) for name in SUMS}).order_by()
    for r in sums:
        part = _classified(r["status_code"], r["refused"], r["requests"])
        part.prompt_tokens, part.completion_tokens = r["prompt_tokens"], r["completion_tokens"]
        part.total_tokens, part.cached_tokens = r["total_tokens"], r["cached_tokens"]
        part.reasoning_tokens, part.latency_ms, part.unpriced = r["reasoning_tokens"], r["latency_ms"], r["unpriced"]
        part.cost = Decimal(r["cost_units"]) * COST_UNIT
        when = _floor(r["bucket"], bucket) if bucket is not None else None
        merge(out, (when, _by_value(r, by)), part)


def _classified(status: int, refused: bool, n: int) -> Figures:
    part = Figures(requests=n)
    if refused:
        part.refused = n
    elif 0 < status < 400:  # 0: the worker died mid-request (settled by the lease reaper)
        part.successes = n
    else:
        part.errors = n
    return part


def _ledger(
    f: UsageFilter,
    lo: datetime | None,
    hi: datetime | None,
    by: By,
    bucket: int | None,
    out: dict[Any, Figures],
) -> None:
    narrowed = UsageFilter(**{**f.__dict__, "start": lo, "end": hi})
    rows: QuerySet[UsageRecord] = UsageRecord.objects.filter(narrowed.ledger_q())
    group = ["status_code", "refusal", *_by_columns(by)]
    if bucket is not None:
        trunc = TruncDay if bucket == DAY_SECONDS else TruncHour
        rows = rows.annotate(when=trunc("created_at", tzinfo=UTC))
        group.append("when")
    rows = rows.annotate(refusal=Q(error_type__in=REFUSAL_TYPES))
    sums = rows.values(*group).annotate(**ledger_sums()).order_by()
    for r in sums:
        part = _classified(r["status_code"], bool(r["refusal"]), r["n"])
        part.prompt_tokens, part.completion_tokens = r["prompt"] or 0, r["completion"] or 0
        part.total_tokens, part.cached_tokens = r["total"] or 0, r["cached"] or 0
        part.reasoning_tokens, part.latency_ms = r["reasoning"] or 0, r["latency"] or 0
        part.unpriced = r["unpriced_n"]
        part.cost = Decimal(r["cost_sum"] or 0)
        when = r["when"] if bucket is not None else None
        merge(out, (when, _by_value(r, by)), part)


def histogram(f: UsageFilter, seconds: int) -> list[tuple[datetime, Figures]]:
    """Zero-filled buckets over the filter's range (which must have a start)."""
    found = {when: part for (when, _), part in figures(f, bucket=seconds).items()}
    start = _floor(f.start or min(found, default=timezone.now()), seconds)
    end = f.end or timezone.now()
    out: list[tuple[datetime, Figures]] = []
    moment = start
    while moment < end and len(out) < 2000:
        out.append((moment, found.get(moment, Figures())))
        moment += timedelta(seconds=seconds)
    return out


def breakdown(f: UsageFilter, by: By) -> list[tuple[Any, Figures]]:
    """Figures per value of ``by``, the biggest spend first."""
    grouped: dict[Any, Figures] = {}
    for (_, value), part in figures(f, by=by).items():
        merge(grouped, value, part)
    return sorted(grouped.items(), key=lambda item: (-item[1].cost, -item[1].requests, str(item[0])))


def ids(values: Iterable[Any]) -> list[uuid.UUID]:
    return [v if isinstance(v, uuid.UUID) else uuid.UUID(str(v)) for v in values]
