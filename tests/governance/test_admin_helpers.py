"""Helpers for the admin tests (no tests here): POST bodies with inline management forms."""

from __future__ import annotations

from typing import Any

VK_INLINES = ("budgets", "rate_limit", "provider_configs", "mcp_configs")
OWNER_INLINES = ("budgets", "rate_limit")


def inline_rows(prefix: str, rows: list[dict[str, Any]], *, initial: int = 0) -> dict[str, Any]:
    """Management form plus ``rows`` for one inline formset."""
    data: dict[str, Any] = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        for key, value in row.items():
            data[f"{prefix}-{index}-{key}"] = value
    return data


def form_body(fields: dict[str, Any], inlines: tuple[str, ...], **rows: list[dict[str, Any]]) -> dict[str, Any]:
    """An admin change-form POST: ``fields`` plus every inline (empty unless given in ``rows``)."""
    body = dict(fields)
    for prefix in inlines:
        body |= inline_rows(prefix, rows.get(prefix, []))
    return body


def vk_body(**fields: Any) -> dict[str, Any]:
    rows = {prefix: fields.pop(prefix) for prefix in VK_INLINES if prefix in fields}
    base = {"name": "app-key", "description": "", "is_active": "on", "team": "", "customer": "", "expires_at_0": ""}
    base["expires_at_1"] = ""
    return form_body(base | fields, VK_INLINES, **rows)
