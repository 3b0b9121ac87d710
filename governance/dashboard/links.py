"""Where the dashboard's names lead: the dashboard narrowed to that name (the other filters kept),
the usage records list (the logs) filtered the same way, and an entity's admin page."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse

# The dashboard's filters and the usage list's parameter for each (``governance.admin.usage``).
LOG_PARAMS = {
    "virtual_key": "virtual_key__id__exact",
    "team": "team__id__exact",
    "customer": "customer__id__exact",
    "provider": "provider__exact",
    "model": "model__exact",
}
ADMIN_PAGES = {"virtual_key": "virtualkey", "team": "team", "customer": "customer"}


def _value(value: Any) -> str:
    return str(getattr(value, "pk", value))


def _filters(data: dict[str, Any]) -> dict[str, str]:
    """The dashboard's active filters as query parameters (an entity by its id)."""
    out = {"start": data["start"].isoformat(), "end": data["end"].isoformat()}
    for name in LOG_PARAMS:
        if data.get(name):
            out[name] = _value(data[name])
    return out


def dashboard_url(data: dict[str, Any], **changes: Any) -> str:
    """The dashboard with the current filters and ``changes`` (a name narrowed to one value)."""
    params = _filters(data) | {name: _value(value) for name, value in changes.items()}
    return reverse("governance-usage-dashboard") + "?" + urlencode(params)


def logs_url(data: dict[str, Any], **changes: Any) -> str:
    """The usage records list filtered like the dashboard, plus ``changes`` (``outcome`` too)."""
    merged = {name: data.get(name) for name in LOG_PARAMS} | changes
    # Aware instants, as the list's own date filter writes them (a bare date is a naive datetime).
    params = {
        "created_at__gte": str(datetime.combine(data["start"], time.min, tzinfo=UTC)),
        "created_at__lt": str(datetime.combine(data["end"] + timedelta(days=1), time.min, tzinfo=UTC)),
    }
    for name, value in merged.items():
        if value:
            params[LOG_PARAMS.get(name, name)] = _value(value)
    return reverse("admin:governance_usagerecord_changelist") + "?" + urlencode(params)


def admin_url(field: str, pk: Any) -> str:
    return reverse(f"admin:governance_{ADMIN_PAGES[field]}_change", args=[pk])
