"""``GET /api/logs`` and ``GET /api/logs/stats``: the ledger searched, in Bifrost's shape.

Every inference attempt is an entry, and so is every request governance refused (401, 402, 403,
429 with the type and the limits that refused: ``error_details``), so that "why is this key
failing?" has an answer. Filters (each list comma-separated or repeated): ``providers``,
``models``, ``status`` (``success``, ``error``, ``refused``), ``status_codes``,
``virtual_key_ids``, ``team_ids``, ``customer_ids``, ``selected_key_ids``, ``request_id`` (the
``x-request-id`` the client saw), ``error_types``, ``stream``, ``start_time`` / ``end_time``
(ISO 8601; end exclusive), ``min_latency`` / ``max_latency`` (ms), ``min_tokens`` /
``max_tokens`` (total), ``min_cost`` / ``max_cost`` (USD); ``limit`` (default 50, at most 1000),
``offset``, ``sort_by`` (``timestamp``, ``latency``, ``tokens``, ``cost``) and ``order``.

``content_search`` finds text in the stored request and response bodies: only those of requests
whose content was logged (``BIFROST_CONTENT_LOGGING``, or the key's ``log_content``); with content
logging off everywhere it is a 400 that says so rather than an empty answer. An entry whose
bodies are stored carries them (``content``). ``stats`` answers totals for the same filters and a
histogram (hourly up to two days, daily beyond) from the usage rollups
(``governance.usage_stats``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance import usage_stats
from governance.api.permissions import StaffModelPermissions
from governance.models import ProviderKey, RequestContent, UsageRecord, VirtualKey
from governance.models.usage import REFUSAL_TYPES
from governance.usage_stats import STATUSES, UsageFilter

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
SORTS = {"timestamp": "created_at", "latency": "latency_ms", "tokens": "total_tokens", "cost": "cost"}
LIST_PARAMS = ("providers", "models", "status", "status_codes", "virtual_key_ids", "team_ids", "customer_ids")
KNOWN = {
    *LIST_PARAMS,
    "selected_key_ids",
    "request_id",
    "error_types",
    "stream",
    "start_time",
    "end_time",
    "min_latency",
    "max_latency",
    "min_tokens",
    "max_tokens",
    "min_cost",
    "max_cost",
    "limit",
    "offset",
    "sort_by",
    "order",
    "content_search",
}


def _list(request: Request, name: str) -> list[str]:
    values = [part.strip() for raw in request.query_params.getlist(name) for part in raw.split(",")]
    found = [v for v in values if v]
    if len(found) > 200:
        raise ValidationError({name: ["at most 200 values"]})
    for value in found:
        if len(value) > 255:
            raise ValidationError({name: ["a value is longer than 255 characters"]})
    return found


def _uuids(request: Request, name: str) -> list[uuid.UUID]:
    out = []
    for value in _list(request, name):
        try:
            out.append(uuid.UUID(value))
        except ValueError:
            raise ValidationError({name: [f"'{value[:40]}' is not a UUID"]}) from None
    return out


def _int(request: Request, name: str, *, default: int | None = None, most: int = 2**31 - 1) -> int | None:
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    if not raw.isdigit() or len(raw) > 10 or int(raw) > most:
        raise ValidationError({name: [f"{name} must be an integer from 0 to {most}"]})
    return int(raw)


def _money(request: Request, name: str) -> Decimal | None:
    raw = request.query_params.get(name, "")
    if raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value < 0 or value >= Decimal(10) ** 14:
        raise ValidationError({name: [f"{name} must be an amount in USD, at least 0"]})
    return value


def _time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name, "")
    if raw == "":
        return None
    try:
        moment = parse_datetime(raw.replace(" ", "+"))  # a '+' in a query string arrives as a space
    except ValueError:
        moment = None
    if moment is None:
        raise ValidationError({name: [f"{name} must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z"]})
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_filter(request: Request) -> UsageFilter:
    unknown = sorted(set(request.query_params) - KNOWN)
    if unknown:
        raise ValidationError({unknown[0]: [f"unknown query parameter; known: {', '.join(sorted(KNOWN))}"]})
    content_search = request.query_params.get("content_search", "")
    if content_search and not content_logged():
        raise ValidationError(
            {
                "content_search": [
                    "content logging is off (BIFROST_CONTENT_LOGGING, or a virtual key's log_content), so no "
                    "request or response body is stored to search"
                ]
            }
        )
    if len(content_search) > 500:
        raise ValidationError({"content_search": ["at most 500 characters"]})
    statuses = _list(request, "status")
    for status in statuses:
        if status not in STATUSES:
            raise ValidationError({"status": [f"'{status[:40]}' is not one of {', '.join(STATUSES)}"]})
    codes = []
    for code in _list(request, "status_codes"):
        if not code.isdigit() or not 0 <= int(code) <= 999:
            raise ValidationError({"status_codes": [f"'{code[:40]}' is not an HTTP status code"]})
        codes.append(int(code))
    stream_raw = request.query_params.get("stream", "")
    if stream_raw not in ("", "true", "false"):
        raise ValidationError({"stream": ["stream must be true or false"]})
    f = UsageFilter(
        start=_time(request, "start_time"),
        end=_time(request, "end_time"),
        providers=_list(request, "providers"),
        models=_list(request, "models"),
        virtual_key_ids=_uuids(request, "virtual_key_ids"),
        team_ids=_uuids(request, "team_ids"),
        customer_ids=_uuids(request, "customer_ids"),
        statuses=statuses,
        status_codes=codes,
        selected_key_ids=_uuids(request, "selected_key_ids"),
        request_id=request.query_params.get("request_id", "")[:128],
        error_types=_list(request, "error_types"),
        stream=None if stream_raw == "" else stream_raw == "true",
        min_latency=_int(request, "min_latency"),
        max_latency=_int(request, "max_latency"),
        min_tokens=_int(request, "min_tokens"),
        max_tokens=_int(request, "max_tokens"),
        min_cost=_money(request, "min_cost"),
        max_cost=_money(request, "max_cost"),
        content_search=content_search,
    )
    if f.start is not None and f.end is not None and f.start >= f.end:
        raise ValidationError({"end_time": ["end_time must be after start_time"]})
    return f


def content_logged() -> bool:
    """Whether any body may have been stored: logging on for everyone or for a key, or bodies kept."""
    return (
        settings.CONTENT_LOGGING
        or VirtualKey.objects.filter(log_content=True).exists()
        or RequestContent.objects.exists()
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def status_of(row: UsageRecord) -> str:
    if row.error_type in REFUSAL_TYPES:
        return "refused"
    # 0: the worker died mid-request (its reservation settled by the lease reaper): not a success.
    return "success" if 0 < row.status_code < 400 else "error"


def _refused_by(words: str) -> list[dict[str, str]]:
    out = []
    for word in words.split():
        level, _, rest = word.partition(":")
        kind, _, limit_id = rest.partition(":")
        out.append({"level": level, "kind": kind, "id": limit_id})
    return out


def entry(row: UsageRecord, vk_names: dict, key_names: dict, contents: dict | None = None) -> dict[str, Any]:
    status = status_of(row)
    error = None
    if status != "success":
        error = {
            "type": row.error_type or None,
            "status_code": row.status_code,
            "is_bifrost_error": status == "refused",
            "error": {"type": row.error_type or None, "message": row.error_message},
            "refused_by": _refused_by(row.refused_by),
        }
    return {
        "id": str(row.request_id),
        "request_id": row.http_request_id or None,
        "timestamp": _iso(row.created_at),
        "created_at": _iso(row.created_at),
        "object": row.request_type,
        "provider": row.provider,
        "model": row.model,
        "status": status,
        "status_code": row.status_code,
        "latency": row.latency_ms,
        "stream": row.streamed,
        "fallback_index": row.fallback_index,
        "selected_key_id": str(row.provider_key_id) if row.provider_key_id else None,
        "selected_key_name": key_names.get(row.provider_key_id),
        "virtual_key_id": str(row.virtual_key_id) if row.virtual_key_id else None,
        "virtual_key_name": vk_names.get(row.virtual_key_id),
        "team_id": str(row.team_id) if row.team_id else None,
        "customer_id": str(row.customer_id) if row.customer_id else None,
        "upstream_reached": row.upstream_reached,
        "token_usage": {
            "prompt_tokens": row.prompt_tokens,
            "prompt_tokens_details": {"cached_tokens": row.cached_tokens},
            "completion_tokens": row.completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": row.reasoning_tokens},
            "total_tokens": row.total_tokens,
            "estimated": row.estimated,
        },
        "cost": float(row.cost),
        "cost_details": _cost_details(row),
        "error_details": error,
        "content": _content((contents or {}).get(row.request_id)),
    }


def _cost_details(row: UsageRecord) -> dict[str, Any]:
    """Bifrost's cost breakdown, each part exact as a fixed-point string (never ``1.5E-7``); the
    parts are null when the cost came from the upstream or nothing was priced here."""
    input_cost, output_cost = row.input_cost, row.output_cost
    if input_cost is None or output_cost is None:
        parts: dict[str, str | None] = {"input_tokens_cost": None, "output_tokens_cost": None, "request_cost": None}
    else:
        parts = {
            "input_tokens_cost": _fixed(input_cost),
            "output_tokens_cost": _fixed(output_cost),
            "request_cost": _fixed(row.cost - input_cost - output_cost),
        }
    return {**parts, "total_cost": _fixed(row.cost), "priced": row.priced, "price_source": row.price_source}


def _fixed(amount: Decimal) -> str:
    return format(amount, "f")


def _content(found: RequestContent | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {"request": found.request_body, "response": found.response_body, "truncated": found.truncated}


def stats_json(figures: usage_stats.Figures) -> dict[str, Any]:
    return {
        "total_requests": figures.requests,
        "success_count": figures.successes,
        "error_count": figures.errors,
        "refused_count": figures.refused,
        "success_rate": figures.success_rate,
        "average_latency": figures.average_latency,
        "total_tokens": figures.total_tokens,
        "prompt_tokens": figures.prompt_tokens,
        "completion_tokens": figures.completion_tokens,
        "cached_tokens": figures.cached_tokens,
        "reasoning_tokens": figures.reasoning_tokens,
        "total_cost": float(figures.cost),
        "total_cost_exact": _fixed(figures.cost),
        "unpriced_requests": figures.unpriced,
    }


_FILTER_DOC = (
    [OpenApiParameter(name, OpenApiTypes.STR, description="comma-separated or repeated") for name in LIST_PARAMS]
    + [
        OpenApiParameter(name, OpenApiTypes.STR)
        for name in ("selected_key_ids", "request_id", "error_types", "stream", "start_time", "end_time")
    ]
    + [
        OpenApiParameter(name, OpenApiTypes.NUMBER)
        for name in ("min_latency", "max_latency", "min_tokens", "max_tokens", "min_cost", "max_cost")
    ]
)


class LogsView(APIView):
    queryset = UsageRecord.objects.none()  # the model whose view permission reads the logs
    permission_classes = [StaffModelPermissions]

    @extend_schema(
        parameters=[
            *_FILTER_DOC,
            OpenApiParameter("limit", OpenApiTypes.INT),
            OpenApiParameter("offset", OpenApiTypes.INT),
            OpenApiParameter("sort_by", OpenApiTypes.STR, enum=list(SORTS)),
            OpenApiParameter("order", OpenApiTypes.STR, enum=["asc", "desc"]),
        ],
        responses={200: OpenApiTypes.OBJECT},
        description="The usage ledger searched: every attempt and every refusal by governance, newest first.",
    )
    def get(self, request: Request) -> Response:
        f = parse_filter(request)
        limit = _int(request, "limit", default=DEFAULT_LIMIT, most=MAX_LIMIT)
        if limit == 0:
            raise ValidationError({"limit": [f"limit must be an integer from 1 to {MAX_LIMIT}"]})
        offset = _int(request, "offset", default=0)
        sort_by = request.query_params.get("sort_by", "timestamp")
        order = request.query_params.get("order", "desc")
        if sort_by not in SORTS:
            raise ValidationError({"sort_by": [f"sort_by must be one of {', '.join(SORTS)}"]})
        if order not in ("asc", "desc"):
            raise ValidationError({"order": ["order must be asc or desc"]})
        column = SORTS[sort_by]
        prefix = "-" if order == "desc" else ""
        rows = UsageRecord.objects.filter(f.ledger_q())
        page = list(rows.order_by(f"{prefix}{column}", f"{prefix}id")[offset : offset + limit])  # type: ignore[operator]
        vk_names = dict(
            VirtualKey.objects.filter(pk__in={r.virtual_key_id for r in page if r.virtual_key_id}).values_list(
                "pk", "name"
            )
        )
        key_names = dict(
            ProviderKey.objects.filter(pk__in={r.provider_key_id for r in page if r.provider_key_id}).values_list(
                "pk", "name"
            )
        )
        contents = {c.request_id: c for c in RequestContent.objects.filter(request_id__in=[r.request_id for r in page])}
        total = _count(f, rows)
        return Response(
            {
                "logs": [entry(r, vk_names, key_names, contents) for r in page],
                "pagination": {
                    "total_count": total,
                    "limit": limit,
                    "offset": offset,
                    "sort_by": sort_by,
                    "order": order,
                },
                "has_logs": total > 0,
            }
        )


def _count(f: UsageFilter, rows: Any) -> int:
    """How many entries match: from the rollups when they can say (exact, and a few small
    queries instead of counting a day's rows), else counted in the ledger. Only for a range that
    starts within the retention period: rollups outlive purged records."""
    retained = timezone.now() - timedelta(days=settings.USAGE_RETENTION_DAYS)
    if f.ledger_only or f.start is None or f.start < retained:
        return int(rows.count())
    return usage_stats.total(f).requests


class LogStatsView(APIView):
    queryset = UsageRecord.objects.none()
    permission_classes = [StaffModelPermissions]

    @extend_schema(
        parameters=_FILTER_DOC,
        responses={200: OpenApiTypes.OBJECT},
        description="Totals, success rate, average latency, tokens and cost for the same filters as /api/logs, "
        "and a histogram over time (hourly up to two days, daily beyond; the last 30 days without start_time).",
    )
    def get(self, request: Request) -> Response:
        f = parse_filter(request)
        for name in ("limit", "offset", "sort_by", "order"):
            if name in request.query_params:
                raise ValidationError({name: ["stats has no pages: leave it out"]})
        seconds = usage_stats.bucket_size(f)
        ranged = f if f.start is not None else UsageFilter(**{**f.__dict__, "start": _default_start(seconds)})
        buckets = usage_stats.histogram(ranged, seconds)
        everything = usage_stats.total(f)
        return Response(
            {
                **stats_json(everything),
                "histogram": {
                    "bucket_size_seconds": seconds,
                    "buckets": [
                        {
                            "timestamp": _iso(when),
                            "requests": part.requests,
                            "errors": part.errors,
                            "refused": part.refused,
                            "total_tokens": part.total_tokens,
                            "cost": float(part.cost),
                            "average_latency": part.average_latency,
                        }
                        for when, part in buckets
                    ],
                },
            }
        )


def _default_start(seconds: int) -> datetime:
    return timezone.now() - timedelta(days=2 if seconds == usage_stats.HOUR_SECONDS else 30)
