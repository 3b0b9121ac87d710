"""Query-string handling shared by list endpoints: limit/offset pagination, search, sort."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TypeVar

from django.db.models import Model, QuerySet
from rest_framework.exceptions import ValidationError

# ``request.query_params``: a ``QueryDict``, whose ``get`` gives the last value of a name.
Params = Mapping[str, str]
M = TypeVar("M", bound=Model)

DEFAULT_LIMIT = 25
MAX_LIMIT = 100


def _int_param(params: Params, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise ValidationError({name: [f"{name} must be a non-negative integer"]})
    if len(raw) > 9:
        raise ValidationError({name: [f"{name} is too large"]})
    return int(raw)


def page_params(params: Params) -> tuple[int, int]:
    """``(limit, offset)``; limit defaults to 25 and is capped at 100, 0 is refused."""
    limit = _int_param(params, "limit", DEFAULT_LIMIT)
    offset = _int_param(params, "offset", 0)
    if limit == 0:
        raise ValidationError({"limit": ["limit must be between 1 and 100"]})
    return min(limit, MAX_LIMIT), offset


def uuid_param(params: Params, name: str) -> uuid.UUID | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationError({name: [f"{name} must be a UUID"]}) from None


def search(queryset: QuerySet[M], params: Params, *, field: str = "name") -> QuerySet[M]:
    raw = params.get("search", "")
    if len(raw) > 255:  # before strip(): the limit is on what the client sent
        raise ValidationError({"search": ["search is too long (max 255 characters)"]})
    if "\x00" in raw:  # PostgreSQL text cannot hold it; refuse it the same way on every backend
        raise ValidationError({"search": ["search must not contain NUL characters"]})
    term = raw.strip()
    return queryset.filter(**{f"{field}__icontains": term}) if term else queryset


def sort(queryset: QuerySet[M], params: Params, fields: dict[str, str], *, default: str = "name") -> QuerySet[M]:
    """Order by ``sort_by`` (one of ``fields``; ``default`` when absent) and ``order`` (asc|desc);
    ties broken by id."""
    sort_by = params.get("sort_by") or default
    order = (params.get("order") or "asc").lower()
    if sort_by not in fields:
        raise ValidationError({"sort_by": [f"sort_by must be one of {', '.join(fields)}"]})
    if order not in ("asc", "desc"):
        raise ValidationError({"order": ["order must be asc or desc"]})
    prefix = "-" if order == "desc" else ""
    return queryset.order_by(f"{prefix}{fields[sort_by]}", f"{prefix}pk")


def paginate(queryset: QuerySet[M], params: Params) -> tuple[list[M], dict[str, int]]:
    limit, offset = page_params(params)
    total = queryset.count()
    rows = list(queryset[offset : offset + limit])
    return rows, {"count": len(rows), "total_count": total, "limit": limit, "offset": offset}
