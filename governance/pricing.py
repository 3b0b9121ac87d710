"""Model prices: the shipped catalog, the rule that finds a model's price, and the cost of a request.

**Finding a price** (:func:`find_price`, used by the proxy through ``governance.metering.snapshot``). A
price row names a *provider* — a configured provider's name or a provider type (``openai``,
``anthropic``, ``gemini``: the catalog's rows) — and a model. For a request to model ``m`` on
provider ``p`` of format ``f``, the first hit of this order wins:

1. a row for ``p``'s own name (an operator's negotiated or provider-specific price);
2. a row for ``p``'s type ``f`` (so ``openai-eu`` or ``azure-prod`` of the OpenAI format price
   ``gpt-4o`` like ``openai`` does);
3. a row for the model under any provider (a Gemini model served through an OpenAI-compatible
   endpoint; rows are taken in provider-name order, so the answer is deterministic).

Within each step the model's name is tried as sent, then with one and then two version
suffixes removed — ``-latest``, a date (``-2024-11-20``, ``-20241022``, ``@20241022``), a
four-digit snapshot (``-0613``) or a three-digit revision (``-002``) — and then the same for the
part after the last ``/`` (``openai/gpt-4o`` on a routing provider, ``models/gemini-2.5-pro``).
So ``gpt-4o-2024-11-20`` costs what ``gpt-4o`` costs unless a row names the dated id itself.

A **pricing override** (``governance.price_overrides``: per virtual key, provider key, provider or
global, by model name, prefix or glob) patches the price this rule finds, field by field, and can
price a model the catalog does not have.

A model with no price is *unpriced*: the proxy refuses it on a path that carries a budget
(``GOVERNANCE_UNPRICED_MODELS=block``, the default) and otherwise records it at $0 flagged
``priced=False``. A price of 0 is a price.

**Loading.** Migration 0003 loads the catalog into an empty table, so a bare ``manage.py
migrate`` prices every model in it; ``manage.py seed_prices`` adds missing rows and ``--update``
overwrites rows from the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TypeVar

from django.db import models, transaction

CATALOG_FILE = Path(__file__).parent / "data" / "model_prices.json"
PER_MILLION = Decimal(1_000_000)

# One version suffix: -latest, a date, a four-digit snapshot or a three-digit revision.
_VERSION_SUFFIX = re.compile(r"(?:-latest|-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-\d{4}|-\d{3})$")

P = TypeVar("P")


class Price(Protocol):
    """What :func:`cost_of` reads of a price: a ModelPrice row or a snapshot of one (USD per token)."""

    @property
    def input_cost_per_token(self) -> Decimal: ...

    @property
    def output_cost_per_token(self) -> Decimal: ...

    @property
    def cached_input_cost_per_token(self) -> Decimal | None: ...


def _per_token(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value) / PER_MILLION


def catalog_rows() -> list[dict[str, Any]]:
    """The shipped catalog as model field values (USD per token)."""
    rows = []
    for row in json.loads(CATALOG_FILE.read_text())["prices"]:
        rows.append(
            {
                "provider": row["provider"],
                "model": row["model"],
                "input_cost_per_token": _per_token(row["input"]),
                "output_cost_per_token": _per_token(row["output"]),
                "cached_input_cost_per_token": _per_token(row["cached_input"]),
            }
        )
    return rows


def load_catalog(model: type[models.Model], *, update: bool = False) -> tuple[int, int]:
    """Insert the catalog's rows into ``model`` (the ModelPrice class, or its historical version
    in a migration); existing rows are kept unless ``update``. Returns (created, updated)."""
    created = updated = 0
    for row in catalog_rows():
        keys = {"provider": row.pop("provider"), "model": row.pop("model")}
        if update:
            _, was_created = model._default_manager.update_or_create(**keys, defaults=row)
            updated += not was_created
        else:
            _, was_created = model._default_manager.get_or_create(**keys, defaults=row)
        created += was_created
    return created, updated


@transaction.atomic
def seed_model_prices(*, update: bool = False) -> tuple[int, int]:
    """Insert the shipped prices; existing rows are kept unless ``update`` (admin edits win)."""
    from governance.models import ModelPrice

    return load_catalog(ModelPrice, update=update)


def model_name_variants(model: str) -> list[str]:
    """The names tried for ``model``, most specific first (the rule in the module docstring)."""
    names: list[str] = []
    for name in (model, model.rsplit("/", 1)[-1]):
        current = name
        names.append(current)
        for _ in range(2):
            stripped = _VERSION_SUFFIX.sub("", current)
            if not stripped or stripped == current:
                break
            names.append(stripped)
            current = stripped
    return list(dict.fromkeys(names))


def find_price(
    rows: Mapping[tuple[str, str], P],
    by_model: Mapping[str, P],
    *,
    provider: str,
    provider_type: str,
    model: str,
) -> P | None:
    """The price of ``model`` on ``provider`` (of type ``provider_type``) among ``rows`` (by
    ``(provider, model)``) and ``by_model`` (the first row of each model in provider order)."""
    names = model_name_variants(model)
    for owner in dict.fromkeys((provider, provider_type)):
        for name in names:
            hit = rows.get((owner, name))
            if hit is not None:
                return hit
    for name in names:
        hit = by_model.get(name)
        if hit is not None:
            return hit
    return None


def index_by_model(rows: Iterable[tuple[tuple[str, str], P]]) -> dict[str, P]:
    """``{model: price}`` keeping the first provider in name order for each model."""
    out: dict[str, P] = {}
    for (_, model), price in sorted(rows, key=lambda item: item[0]):
        out.setdefault(model, price)
    return out


def cost_parts(
    price: Price, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
) -> tuple[Decimal, Decimal]:
    """``(input cost, output cost)`` of a priced request (cached input at its own price inside the
    input cost); what :func:`cost_of` adds to them is the flat per-request amount."""
    cached = min(max(cached_tokens, 0), max(prompt_tokens, 0))
    cached_price = price.cached_input_cost_per_token
    if cached_price is None:
        cached_price = price.input_cost_per_token
    return (prompt_tokens - cached) * price.input_cost_per_token + cached * cached_price, (
        completion_tokens * price.output_cost_per_token
    )


def cost_of(
    price: Price | None,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    upstream_cost: Decimal | None = None,
) -> tuple[Decimal, bool]:
    """``(cost in USD, priced)``. A cost reported by the upstream wins over our price table.

    ``price`` is anything with the three ``*_cost_per_token`` attributes (a ModelPrice row or a
    snapshot), and optionally ``cost_per_request`` (a pricing override's flat amount, added once).
    ``prompt_tokens`` includes ``cached_tokens`` (OpenAI's convention), so cached
    tokens are charged at the cached price and only the rest at the input price. Unpriced models
    cost 0 and are flagged ``priced=False`` so the bypass is visible.
    """
    if upstream_cost is not None:
        return Decimal(upstream_cost), True
    if price is None:
        return Decimal("0"), False
    input_cost, output_cost = cost_parts(
        price, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_tokens=cached_tokens
    )
    cost = input_cost + output_cost
    per_request: Decimal | None = getattr(price, "cost_per_request", None)  # ModelPrice rows have none
    if per_request:
        cost += per_request
    return cost, True
