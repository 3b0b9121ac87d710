"""``{{ amount|usd }}``: dollars with the precision the amount needs (LLM calls cost fractions of a cent)."""

from __future__ import annotations

from decimal import Decimal

from django import template

from governance.dashboard.charts import money

register = template.Library()


@register.filter
def usd(value: Decimal | int | None) -> str:
    return "" if value is None else money(value)
