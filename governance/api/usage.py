"""``GET /api/governance/virtual-keys/usage``: a VK holder reads its own daily usage, per model.

Authenticated by the virtual key itself, like the quota endpoint (``governance.api.quota``), so
a team can chart its consumption without admin credentials. It shows the key's own requests
only. ``start_date`` and ``end_date`` (``YYYY-MM-DD``, UTC days, both included) default to the
last 30 days; a range is at most ``MAX_DAYS`` days. Figures come from the daily rollups
(``governance.usage_stats``): exact, and as fresh as the ledger.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_date
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance import usage_stats
from governance.api import docs
from governance.api.quota import calling_virtual_key
from governance.usage_stats import Figures, UsageFilter

MAX_DAYS = 366
DEFAULT_DAYS = 30


def _date(request: Request, name: str, default: date) -> date:
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    try:
        found = parse_date(raw)
    except ValueError:
        found = None
    if found is None:
        raise ValidationError({name: [f"{name} must be a date, YYYY-MM-DD"]})
    return found


def _figures(part: Figures) -> dict[str, Any]:
    return {
        "requests": part.requests,
        "errors": part.errors,
        "refused": part.refused,
        "prompt_tokens": part.prompt_tokens,
        "completion_tokens": part.completion_tokens,
        "total_tokens": part.total_tokens,
        "cost": float(part.cost),
    }


class VirtualKeyUsageView(APIView):
    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        auth=docs.VIRTUAL_KEY_AUTH,  # type: ignore[arg-type]
        parameters=[OpenApiParameter("start_date", OpenApiTypes.DATE), OpenApiParameter("end_date", OpenApiTypes.DATE)],
        responses={200: OpenApiTypes.OBJECT},
        description=(
            "The calling virtual key's daily spend, tokens and requests, per model, over a range of at most "
            f"{MAX_DAYS} days (default: the last {DEFAULT_DAYS})."
            " Authenticated by the virtual key, no admin credential."
        ),
    )
    def get(self, request: Request) -> Response:
        vk = calling_virtual_key(request)
        if isinstance(vk, Response):
            return vk
        unknown = sorted(set(request.query_params) - {"start_date", "end_date"})
        if unknown:
            raise ValidationError({unknown[0]: ["unknown query parameter; known: start_date, end_date"]})
        today = timezone.now().astimezone(UTC).date()
        end = _date(request, "end_date", today)
        start = _date(request, "start_date", end - timedelta(days=DEFAULT_DAYS - 1))
        if start > end:
            raise ValidationError({"start_date": ["start_date must not be after end_date"]})
        if (end - start).days + 1 > MAX_DAYS:
            raise ValidationError({"start_date": [f"the range is at most {MAX_DAYS} days"]})
        f = UsageFilter(
            start=datetime(start.year, start.month, start.day, tzinfo=UTC),
            end=datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1),
            virtual_key_ids=[vk.pk],
        )
        per_day: dict[date, dict[str, Figures]] = {}
        for (when, model), part in usage_stats.figures(f, by="model", bucket=usage_stats.DAY_SECONDS).items():
            usage_stats.merge(per_day.setdefault(when.date(), {}), model, part)
        days = []
        overall = Figures()
        day = start
        while day <= end:
            models = per_day.get(day, {})
            total = Figures()
            for part in models.values():
                total.add(part)
            overall.add(total)
            days.append(
                {
                    "date": day.isoformat(),
                    **_figures(total),
                    "models": [
                        {"model": name, **_figures(part)}
                        for name, part in sorted(models.items(), key=lambda item: (-item[1].cost, item[0]))
                    ],
                }
            )
            day += timedelta(days=1)
        return Response(
            {
                "virtual_key_id": str(vk.pk),
                "virtual_key_name": vk.name,
                "start_date": start.isoformat(),
                "end_date": end.isoformat(),
                "totals": _figures(overall),
                "days": days,
            }
        )
