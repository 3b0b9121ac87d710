"""``import_bifrost_config``: ``governance.model_configs`` and ``governance.providers`` (Bifrost's
config.json shapes), validated with JSON paths, idempotent, usage kept on re-import."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from django.core.management import CommandError

from governance.models import Budget, ModelConfig, Provider, RateLimit
from governance.services import model_config_create
from tests.governance.test_config_import import CONFIG, run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_API_KEY", "sk-openai-secret-abcd")
    monkeypatch.setenv("TEST_ANTHROPIC_API_KEY", "sk-ant-secret-efgh")
    monkeypatch.setenv("TEST_VK_PLATFORM", "sk-bf-11111111-2222-4333-8444-555555555555")


def config_with_limits() -> dict:
    config = copy.deepcopy(CONFIG)
    gov = config["governance"]
    gov["budgets"] += [
        {"id": "budget-gpt4o-daily", "max_limit": 50, "reset_duration": "1d"},
        {"id": "budget-gpt4o-monthly", "max_limit": 1000, "reset_duration": "1M"},
        {"id": "budget-openai", "max_limit": 2000, "reset_duration": "1M"},
        {"id": "budget-claude", "max_limit": 30, "reset_duration": "1w", "model_config_id": "mc-claude"},
    ]
    gov["rate_limits"] += [{"id": "rl-gpt4o", "request_max_limit": 500, "request_reset_duration": "1m"}]
    gov["model_configs"] = [
        {
            "id": "mc-gpt4o",
            "model_name": "gpt-4o",
            "scope": "global",
            "calendar_aligned": True,
            "budget_ids": ["budget-gpt4o-daily", "budget-gpt4o-monthly"],
            "rate_limit_id": "rl-gpt4o",
        },
        {"id": "mc-gpt4o-openai", "model_name": "gpt-4o", "provider": "openai", "budget_id": "budget-gpt4o-daily"},
        {"id": "mc-claude", "model_name": "claude-sonnet-4", "provider": "anthropic"},
    ]
    gov["providers"] = [
        {
            "name": "openai",
            "budget_id": "budget-openai",
            "rate_limit_id": "rl-openai",
            "network_config": {"base_url": "http://elsewhere.invalid"},
        }
    ]
    return config


def test_model_configs_and_provider_governance_are_imported(tmp_path):
    output = run(tmp_path, config_with_limits())

    anywhere = ModelConfig.objects.get(model_name="gpt-4o", provider=None)
    budgets = {b.reset_duration: b for b in anywhere.budgets.all()}
    assert {d: (b.max_limit, b.calendar_aligned) for d, b in budgets.items()} == {
        "1d": (Decimal("50"), True),
        "1M": (Decimal("1000"), True),
    }
    assert anywhere.rate_limit.request_max_limit == 500
    on_openai = ModelConfig.objects.get(model_name="gpt-4o", provider__name="openai")
    assert [(b.max_limit, b.calendar_aligned) for b in on_openai.budgets.all()] == [(Decimal("50"), False)]
    claude = ModelConfig.objects.get(model_name="claude-sonnet-4")
    assert (claude.provider.name, claude.budgets.get().max_limit) == ("anthropic", Decimal("30"))
    openai = Provider.objects.get(name="openai")
    assert openai.budgets.get().max_limit == Decimal("2000")
    assert openai.rate_limit.token_max_limit == 100000
    assert openai.base_url == "http://127.0.0.1:9/v1"  # the providers section configures the provider
    assert "model_configs: 3 created" in output
    assert "governance.providers[0].network_config" in output  # listed as ignored
    assert "governance.model_configs" not in output.split("ignored")[-1]


def test_reimport_is_idempotent_and_keeps_usage(tmp_path):
    config = config_with_limits()
    run(tmp_path, config)
    counts = (ModelConfig.objects.count(), Budget.objects.count(), RateLimit.objects.count())
    Budget.objects.filter(provider__name="openai").update(current_usage=Decimal("12"))

    output = run(tmp_path, config)

    assert (ModelConfig.objects.count(), Budget.objects.count(), RateLimit.objects.count()) == counts
    assert Budget.objects.get(provider__name="openai").current_usage == Decimal("12")
    assert "model_configs: 0 created, 3 updated" in output


def test_a_model_config_made_in_the_api_is_adopted(tmp_path):
    existing = model_config_create(model_name="gpt-4o")
    run(tmp_path, config_with_limits())
    assert ModelConfig.objects.filter(model_name="gpt-4o", provider=None).get().pk == existing.pk


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda g: g["model_configs"][0].pop("model_name"), "governance.model_configs[0].model_name"),
        (lambda g: g["model_configs"][0].update(model_name="*"), "governance.model_configs[0].model_name"),
        (lambda g: g["model_configs"][1].update(provider="nope"), "governance.model_configs[1].provider"),
        (lambda g: g["model_configs"][0].update(scope="virtual_key"), "governance.model_configs[0].scope"),
        (
            lambda g: g["model_configs"][2].update(provider="openai", model_name="gpt-4o"),
            "governance.model_configs[2].model_name",
        ),
        (lambda g: g["model_configs"][0].update(budget_ids=["missing"]), "governance.model_configs[0].budget_ids[0]"),
        (lambda g: g["model_configs"][1].update(budget_id="missing"), "governance.model_configs[1].budget_id"),
        (lambda g: g["model_configs"][0].update(rate_limit_id="missing"), "governance.model_configs[0].rate_limit_id"),
        (
            lambda g: g["model_configs"][0].update(calendar_aligned="yes"),
            "governance.model_configs[0].calendar_aligned",
        ),
        (lambda g: g["model_configs"][0].pop("id"), "governance.model_configs[0].id"),
        (
            lambda g: g["budgets"][-1].update(model_config_id="mc-none"),
            f"governance.budgets[{len(CONFIG['governance']['budgets']) + 3}].model_config_id",
        ),
        (lambda g: g["providers"][0].update(name="nope"), "governance.providers[0].name"),
        (lambda g: g["providers"].append({"name": "openai"}), "governance.providers[1].name"),
        (lambda g: g["providers"][0].update(budget_id="missing"), "governance.providers[0].budget_id"),
    ],
)
def test_invalid_limits_name_the_json_path_and_write_nothing(tmp_path, mutate, path):
    config = config_with_limits()
    mutate(config["governance"])
    with pytest.raises(CommandError) as exc:
        run(tmp_path, config)
    assert f"  {path}: " in str(exc.value)
    assert not Provider.objects.exists() and not ModelConfig.objects.exists() and not Budget.objects.exists()
