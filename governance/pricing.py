"""Model prices: the seed data file and its loader."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from django.db import transaction

from governance.models import ModelPrice

SEED_FILE = Path(__file__).parent / "data" / "model_prices.json"
PER_MILLION = Decimal(1_000_000)


def _per_token(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value) / PER_MILLION


@transaction.atomic
def seed_model_prices(*, update: bool = False) -> tuple[int, int]:
    """Insert the shipped prices; existing rows are kept unless ``update`` (admin edits win)."""
    created = updated = 0
    for row in json.loads(SEED_FILE.read_text())["prices"]:
        values = {
            "input_cost_per_token": _per_token(row["input"]),
            "output_cost_per_token": _per_token(row["output"]),
            "cached_input_cost_per_token": _per_token(row["cached_input"]),
        }
        if update:
            _, was_created = ModelPrice.objects.update_or_create(
                provider=row["provider"], model=row["model"], defaults=values
            )
            updated += not was_created
        else:
            _, was_created = ModelPrice.objects.get_or_create(
                provider=row["provider"], model=row["model"], defaults=values
            )
        created += was_created
    return created, updated


def price_for(provider: str, model: str) -> ModelPrice | None:
    """The price row for provider/model, or None when the model is unpriced."""
    return ModelPrice.objects.filter(provider=provider, model=model).first()


def cost_of(
    price: ModelPrice | None,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    upstream_cost: Decimal | None = None,
) -> tuple[Decimal, bool]:
    """``(cost in USD, priced)``. A cost reported by the upstream wins over our price table.

    ``prompt_tokens`` includes ``cached_tokens`` (OpenAI's convention), so cached tokens are
    charged at the cached price and only the rest at the input price. Unpriced models cost 0
    and are flagged ``priced=False`` so the bypass is visible.
    """
    if upstream_cost is not None:
        return Decimal(upstream_cost), True
    if price is None:
        return Decimal("0"), False
    cached = min(max(cached_tokens, 0), max(prompt_tokens, 0))
    cached_price = price.cached_input_cost_per_token
    if cached_price is None:
        cached_price = price.input_cost_per_token
    cost = (
        (prompt_tokens - cached) * price.input_cost_per_token
        + cached * cached_price
        + completion_tokens * price.output_cost_per_token
    )
    return cost, True
