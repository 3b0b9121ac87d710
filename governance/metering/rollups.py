"""Hourly and daily usage rollups, kept in step with the ledger (``governance.models.rollups``).

``add(rows)`` is called by ``usage_rows.insert_usage_rows`` with the rows it has just inserted,
in the same transaction: a rollup moves exactly when its usage records commit, and a row skipped
as already recorded (a retried write) is not added twice. The batch is summed per rollup key in
Python first, then one ``INSERT … ON CONFLICT DO UPDATE SET x = x + excluded.x`` statement adds
it (PostgreSQL and SQLite both speak it); keys go in sorted order so that two PostgreSQL
transactions lock shared rows in the same order and never deadlock. Costs are summed as integers
of 1e-10 dollars: exact on both databases.

``rebuild(since=None)`` recomputes the rollups from the ledger (``manage.py rebuild_rollups``):
for a ledger filled before rollups existed, or to prove them right.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncHour

from governance.models import UsageRecord, UsageRollup
from governance.models.rollups import COST_UNIT, DAY, HOUR, KEY, NONE, SUMS
from governance.models.usage import REFUSAL_TYPES


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):  # a journal replay may carry ISO text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _id(value: Any) -> uuid.UUID:
    if not value:
        return NONE
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def cost_units(cost: Decimal | int | str | float | None) -> int:
    """A ledger cost as an integer of 1e-10 dollars (the ledger keeps no more decimals)."""
    if not cost:
        return 0
    return int((Decimal(cost) / COST_UNIT).to_integral_value())


def is_refused(row: dict[str, Any]) -> bool:
    """A governance refusal (``UsageRecord.objects.refusals()``)."""
    return row.get("error_type") in REFUSAL_TYPES


def summed(rows: Iterable[dict[str, Any]], into: dict[tuple, list[int]] | None = None) -> dict[tuple, list[int]]:
    """The batch summed per rollup key (``KEY`` order), sums in ``SUMS`` order; added to ``into``
    when given."""
    out: dict[tuple, list[int]] = {} if into is None else into
    for row in rows:
        at = _aware(row["created_at"])
        status = int(row["status_code"])
        refused = is_refused(row)
        owner = (_id(row.get("virtual_key_id")), _id(row.get("team_id")), _id(row.get("customer_id")))
        rest = (row.get("provider") or "", row.get("model") or "", status, refused)
        # A rebuild passes ledger groups as rows with their counts (``_count`` etc.).
        values = [
            row.get("_count", 1),
            int(row.get("prompt_tokens") or 0),
            int(row.get("completion_tokens") or 0),
            int(row.get("total_tokens") or 0),
            int(row.get("cached_tokens") or 0),
            int(row.get("reasoning_tokens") or 0),
            cost_units(row.get("cost")),
            int(row.get("latency_ms") or 0),
            row["_streamed"] if "_streamed" in row else (1 if row.get("streamed") else 0),
            row["_unpriced"] if "_unpriced" in row else (1 if row.get("priced") is False and status < 400 else 0),
        ]
        for key in ((HOUR, hour_of(at), *owner, *rest), (DAY, day_of(at), *owner, *rest)):
            found = out.get(key)
            if found is None:
                out[key] = list(values)
            else:
                for i, v in enumerate(values):
                    found[i] += v
    return out


def add(rows: list[dict[str, Any]]) -> None:
    """Add newly inserted usage rows to their rollups; call inside the transaction that inserted them."""
    if rows:
        upsert(summed(rows))


def upsert(totals: dict[tuple, list[int]], rollup_model: Any = UsageRollup) -> None:
    if not totals:
        return
    conn = connections[DEFAULT_DB_ALIAS]
    ops = conn.ops
    quote = ops.quote_name
    table = quote(rollup_model._meta.db_table)
    columns = [*KEY, *SUMS]
    column_names = [quote(rollup_model._meta.get_field(c).column) for c in columns]
    native_uuid = conn.features.has_native_uuid_field
    params: list[Any] = []
    keys = sorted(totals, key=lambda k: tuple(str(part) for part in k))
    for key in keys:
        gran, bucket, vk, team, customer, provider, model, status, refused = key
        owner = [v if native_uuid else v.hex for v in (vk, team, customer)]
        params += [gran, ops.adapt_datetimefield_value(bucket), *owner, provider, model, status, refused]
        params += totals[key]
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    updates = ", ".join(f"{name} = {table}.{name} + EXCLUDED.{name}" for name in column_names[len(KEY) :])
    sql = (
        f"INSERT INTO {table} ({', '.join(column_names)}) VALUES {', '.join([one] * len(keys))} "  # noqa: S608 (names from the model)
        f"ON CONFLICT ({', '.join(column_names[: len(KEY)])}) DO UPDATE SET {updates}"
    )
    with conn.cursor() as cursor:
        cursor.execute(sql, params)


def rebuild(
    since: datetime | None = None,
    *,
    batch: int = 5000,
    record_model: Any = UsageRecord,
    rollup_model: Any = UsageRollup,
) -> int:
    """Recompute the rollups from the ledger (from the UTC day of ``since``; everything when
    None), in one transaction: readers see the old figures or the new, never a half. Answers the
    number of rollup rows written. (The models are parameters for the migration that fills the
    rollups of a ledger older than them, which passes its historical models.)"""
    start = day_of(since) if since is not None else None
    with transaction.atomic():
        stale = rollup_model.objects.all()
        records = record_model.objects.all()
        if start is not None:
            stale = stale.filter(bucket__gte=start)
            records = records.filter(created_at__gte=start)
        stale.delete()
        totals: dict[tuple, list[int]] = {}
        written = 0
        for row in _ledger_groups(records):
            summed([row], totals)
            if len(totals) >= batch:
                upsert(totals, rollup_model)
                written += len(totals)
                totals = {}
        upsert(totals, rollup_model)
        written += len(totals)
    return written


def ledger_sums() -> dict[str, Any]:
    """The ledger's sums per group, as the rollups keep them (also read by ``usage_stats``)."""
    return {
        "n": Count("id"),
        "prompt": Sum("prompt_tokens"),
        "completion": Sum("completion_tokens"),
        "total": Sum("total_tokens"),
        "cached": Sum("cached_tokens"),
        "reasoning": Sum("reasoning_tokens"),
        "cost_sum": Sum("cost"),
        "latency": Sum("latency_ms"),
        "streams": Count("id", filter=Q(streamed=True)),
        "unpriced_n": Count("id", filter=Q(priced=False, status_code__lt=400)),
    }


def _ledger_groups(records: Any) -> Iterable[dict[str, Any]]:
    """The ledger grouped by hour and rollup key in the database, each group as one big row
    (``summed`` treats it as a row whose counts are the group's sums)."""
    groups = (
        records.annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values(
            "hour",
            "virtual_key_id",
            "team_id",
            "customer_id",
            "provider",
            "model",
            "status_code",
            "error_type",
        )
        .annotate(**ledger_sums())
        .order_by()
    )
    for g in groups.iterator(chunk_size=2000):
        yield _group_row(g)


def _group_row(g: dict[str, Any]) -> dict[str, Any]:
    return {
        "created_at": g["hour"],
        "virtual_key_id": g["virtual_key_id"],
        "team_id": g["team_id"],
        "customer_id": g["customer_id"],
        "provider": g["provider"],
        "model": g["model"],
        "status_code": g["status_code"],
        "error_type": g["error_type"],
        "_count": g["n"],
        "prompt_tokens": g["prompt"] or 0,
        "completion_tokens": g["completion"] or 0,
        "total_tokens": g["total"] or 0,
        "cached_tokens": g["cached"] or 0,
        "reasoning_tokens": g["reasoning"] or 0,
        "cost": g["cost_sum"] or 0,
        "latency_ms": g["latency"] or 0,
        "_streamed": g["streams"],
        "_unpriced": g["unpriced_n"],
    }


def differences(since: datetime | None = None, *, record_model: Any = UsageRecord) -> list[tuple]:
    """The rollup keys whose stored sums differ from the ledger's (from the UTC day of
    ``since``): empty when the rollups are exact. Reads, never writes."""
    start = day_of(since) if since is not None else None
    records = record_model.objects.all()
    stored_rows = UsageRollup.objects.all()
    if start is not None:
        records = records.filter(created_at__gte=start)
        stored_rows = stored_rows.filter(bucket__gte=start)
    expected = summed(_ledger_groups(records))
    stored = {
        tuple(getattr(r, name) for name in KEY): [getattr(r, name) for name in SUMS] for r in stored_rows.iterator()
    }
    stored = {(k[0], _aware(k[1]), *k[2:]): v for k, v in stored.items()}
    return sorted(
        (k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k)),
        key=lambda k: tuple(str(part) for part in k),
    )
