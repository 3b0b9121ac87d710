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
