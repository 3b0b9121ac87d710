"""Prices: the shipped catalog, the lookup rule (by model, not by provider name), and migrate."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from governance.metering import snapshot
from governance.metering.snapshot import KeySnapshot, ProviderSnapshot
from governance.models import ModelPrice
from governance.pricing import CATALOG_FILE, find_price, index_by_model, model_name_variants, seed_model_prices
from governance.provider_types import wire_format

ROOT = Path(__file__).resolve().parents[2]


def provider(name: str, provider_type: str = "openai") -> ProviderSnapshot:
    key = KeySnapshot(id="k", name="k", value="v", models=(), weight=1.0, enabled=True)
    return ProviderSnapshot("p", name, provider_type, wire_format(provider_type), "http://127.0.0.1:9", 5.0, (), (key,))


@pytest.mark.parametrize(
    ("model", "variants"),
    [
        ("gpt-4o", ["gpt-4o"]),
        ("gpt-4o-2024-11-20", ["gpt-4o-2024-11-20", "gpt-4o"]),
        ("claude-3-5-haiku-20241022", ["claude-3-5-haiku-20241022", "claude-3-5-haiku"]),
        ("claude-3-5-haiku-latest", ["claude-3-5-haiku-latest", "claude-3-5-haiku"]),
        ("claude-sonnet-4-5@20250929", ["claude-sonnet-4-5@20250929", "claude-sonnet-4-5"]),
        ("gpt-4-0613", ["gpt-4-0613", "gpt-4"]),
        ("gemini-1.5-pro-002", ["gemini-1.5-pro-002", "gemini-1.5-pro"]),
        (
            "openai/gpt-4o-mini-2024-07-18",
            ["openai/gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"],
        ),
    ],
)
def test_dated_and_versioned_ids_resolve_by_the_documented_rule(model, variants):
    assert model_name_variants(model) == variants


def test_provider_name_row_wins_then_the_provider_type_then_any_provider():
    rows = {
        ("openai", "gpt-4o"): "type price",
        ("azure-prod", "gpt-4o"): "negotiated",
        ("gemini", "gemini-2.5-flash"): "gemini price",
        ("openai", "gpt-4o-2024-05-13"): "dated price",
    }
    by_model = index_by_model(rows.items())

    def find(name, fmt, model):
        return find_price(rows, by_model, provider=name, provider_type=fmt, model=model)

    assert find("azure-prod", "openai", "gpt-4o-2024-11-20") == "negotiated"
    assert find("openai-eu", "openai", "gpt-4o-2024-11-20") == "type price"
    assert find("openai-eu", "openai", "gpt-4o-2024-05-13") == "dated price"  # a listed dated id wins
    assert find("google", "openai", "gemini-2.5-flash") == "gemini price"  # any provider's row
    assert find("openai", "openai", "no-such-model") is None


@pytest.mark.django_db
def test_a_renamed_provider_of_the_openai_format_prices_dated_models_from_the_catalog():
    seed_model_prices()
    eu = snapshot.price(provider("openai-eu"), "gpt-4o-2024-11-20")
    assert (eu.input_cost_per_token, eu.output_cost_per_token) == (Decimal("2.5e-6"), Decimal("10e-6"))
    haiku = snapshot.price(provider("claude-prod", "anthropic"), "claude-3-5-haiku-20241022")
    assert haiku.output_cost_per_token == Decimal("4e-6")
    assert snapshot.price(provider("openai"), "made-up-model") is None


@pytest.mark.django_db
def test_a_provider_specific_row_wins_over_the_catalog():
    seed_model_prices()
    ModelPrice.objects.create(
        provider="azure-prod", model="gpt-4o", input_cost_per_token=Decimal("1e-6"), output_cost_per_token=0
    )
    assert snapshot.price(provider("azure-prod"), "gpt-4o-2024-08-06").input_cost_per_token == Decimal("1e-6")
    assert snapshot.price(provider("openai"), "gpt-4o").input_cost_per_token == Decimal("2.5e-6")


def test_the_catalog_says_its_source_and_date_and_covers_every_family():
    catalog = json.loads(CATALOG_FILE.read_text())
    assert catalog["source"] and catalog["as_of"]
    models = {(row["provider"], row["model"]) for row in catalog["prices"]}
    for family in [
        ("openai", "gpt-5"),
        ("openai", "gpt-4.1"),
        ("openai", "gpt-4o"),
        ("openai", "o3"),
        ("openai", "text-embedding-3-small"),
        ("anthropic", "claude-sonnet-4-5"),
        ("anthropic", "claude-opus-4-1"),
        ("anthropic", "claude-haiku-4-5"),
        ("gemini", "gemini-2.5-pro"),
        ("gemini", "gemini-2.5-flash"),
    ]:
        assert family in models
    assert len(models) == len(catalog["prices"])  # no duplicate rows


@pytest.mark.slow
def test_a_bare_migrate_prices_the_catalog(tmp_path):
    """Container deployments run only ``manage.py migrate``: prices must come with the schema."""
    env = {**os.environ, "BIFROST_DATA_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    catalog = json.loads(CATALOG_FILE.read_text())["prices"]
    with sqlite3.connect(tmp_path / "bifrost.sqlite3") as db:
        rows = db.execute("SELECT provider, model, output_cost_per_token FROM governance_modelprice").fetchall()
        generation = db.execute("SELECT id, value FROM governance_configgeneration").fetchall()
    assert len(rows) == len(catalog)
    assert {(p, m) for p, m, _ in rows} == {(row["provider"], row["model"]) for row in catalog}
    assert generation == [(1, 0)]
