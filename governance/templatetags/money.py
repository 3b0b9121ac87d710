"""``{{ amount|usd }}``: dollars with the precision the amount needs (LLM calls cost fractions of a cent)."""

from __future__ import annotations

from django import template

from governance.dashboard.charts import money

register = template.Library()


@register.filter
def usd(value) -> str:
    return "" if value is None else money(value)
