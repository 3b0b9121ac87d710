from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from governance.keys import digest
from governance.models import (
    Budget,
    Customer,
    Provider,
    ProviderConfig,
    ProviderKey,
    RateLimit,
    RoutingRule,
    Team,
    VirtualKey,
)

pytestmark = pytest.mark.django_db
CONFIG = json.loads((Path(__file__).parent / "data" / "bifrost_config.json").read_text())
VK_VALUE = "sk-bf-11111111-2222-4333-8444-555555555555"


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_API_KEY", "sk-openai-secret-abcd")
    monkeypatch.setenv("TEST_ANTHROPIC_API_KEY", "sk-ant-secret-efgh")
    monkeypatch.setenv("TEST_VK_PLATFORM", VK_VALUE)


def run(tmp_path, config) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    from io import StringIO

    out = StringIO()
    call_command("import_bifrost_config", str(path), stdout=out)
    return out.getvalue()


def snapshot() -> dict:
    return {
        model.__name__: model.objects.count()
        for model in (Provider, ProviderKey, Customer, Team, VirtualKey, ProviderConfig, Budget, RateLimit)
    }


def test_realistic_config_is_imported_with_every_supported_field(tmp_path):
    output = run(tmp_path, CONFIG)
    openai = Provider.objects.get(name="openai")
    assert (openai.base_url, openai.timeout_seconds, openai.extra_headers) == (
        "http://127.0.0.1:9/v1",
        30,
        {"x-org": "acme"},
    )
    anthropic = Provider.objects.get(name="anthropic")
    assert (anthropic.provider_type, anthropic.base_url) == ("anthropic", "")  # blank: the type's default URL
    assert anthropic.effective_base_url == "https://api.anthropic.com"
    assert Provider.objects.get(name="local-llm").provider_type == "openai"
    primary = ProviderKey.objects.get(name="openai-primary")
    assert primary.value == "sk-openai-secret-abcd" and "sk-openai-secret-abcd" not in primary.value_encrypted
    assert ProviderKey.objects.get(name="openai-backup").enabled is False
    team = Team.objects.get(name="ML Team")
    assert team.customer.name == "Acme Corp"
    vk = VirtualKey.objects.get(name="platform-key")
    assert vk.value_digest == digest(VK_VALUE) and vk.team == team and vk.description == "platform services"
    assert vk.rate_limit.request_max_limit == 5000 and vk.rate_limit.token_max_limit == 5000000
    pc = ProviderConfig.objects.get(virtual_key=vk, provider=openai)
    assert pc.allowed_models == ["gpt-4o", "gpt-4o-mini"] and list(pc.keys.values_list("name", flat=True)) == [
        "openai-primary"
    ]
    assert pc.rate_limit.token_max_limit == 100000
    assert Budget.objects.get(provider_config=pc).max_limit == 5
    assert ProviderConfig.objects.get(virtual_key=vk, provider__name="anthropic").allow_all_keys is True
    assert Budget.objects.get(virtual_key=vk).max_limit == Decimal("10.5")
    assert Budget.objects.get(team=team).calendar_aligned is True
    acme = Customer.objects.get(name="Acme Corp")
    assert Budget.objects.get(customer=acme).max_limit == 2000 and acme.rate_limit.request_max_limit == 100000
    batch = VirtualKey.objects.get(name="batch-key")
    assert batch.customer == acme and batch.allow_all_providers is True
    assert "generated value for virtual key 'batch-key' (shown once): sk-bf-" in output
    assert "governance.routing_rules[0].query" in output  # Bifrost's UI-only rule tree: listed as ignored
    overflow = RoutingRule.objects.get(name="ml-overflow")
    assert (overflow.scope, overflow.team, overflow.priority) == ("team", team, 5)
    assert overflow.targets[1]["key_id"] == str(primary.pk)  # the key's name in the file, its id here
    premium = RoutingRule.objects.get(name="premium")  # Bifrost's single-target form
    assert (premium.scope, premium.targets) == (
        "global",
        [{"provider": "openai", "model": "gpt-4o", "key_id": None, "weight": 1.0}],
    )
    assert "sk-openai-secret-abcd" not in output


def test_reimport_is_idempotent_and_keeps_live_usage(tmp_path):
    run(tmp_path, CONFIG)
    before = snapshot()
    budget = Budget.objects.get(virtual_key__name="platform-key")
    Budget.objects.filter(pk=budget.pk).update(current_usage=Decimal("3.25"))
    RateLimit.objects.filter(virtual_key__name="platform-key").update(request_current_usage=42)
    batch_digest = VirtualKey.objects.get(name="batch-key").value_digest
    output = run(tmp_path, CONFIG)
    assert snapshot() == before
    budget.refresh_from_db()
    assert budget.current_usage == Decimal("3.25")
    assert RateLimit.objects.get(virtual_key__name="platform-key").request_current_usage == 42
    assert VirtualKey.objects.get(name="batch-key").value_digest == batch_digest
    assert "generated value" not in output


def test_changed_limits_are_applied_on_reimport(tmp_path):
    run(tmp_path, CONFIG)
    changed = copy.deepcopy(CONFIG)
    changed["governance"]["budgets"][2]["max_limit"] = 99
    run(tmp_path, changed)
    assert Budget.objects.get(virtual_key__name="platform-key").max_limit == 99


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (
            lambda c: c["governance"]["virtual_keys"][0].update(team_id="team-nope"),
            "governance.virtual_keys[0].team_id",
        ),
        (
            lambda c: c["governance"]["virtual_keys"][0].update(customer_id="customer-acme"),
            "governance.virtual_keys[0]",
        ),
        (lambda c: c["governance"]["budgets"][1].update(reset_duration="1q"), "governance.budgets[1].reset_duration"),
        (lambda c: c["governance"]["budgets"][0].update(max_limit=-5), "governance.budgets[0].max_limit"),
        (
            lambda c: c["governance"]["rate_limits"][0].update(request_max_limit="many"),
            "governance.rate_limits[0].request_max_limit",
        ),
        (
            lambda c: c["governance"]["virtual_keys"][0]["provider_configs"][0].update(provider="nope"),
            "governance.virtual_keys[0].provider_configs[0].provider",
        ),
        (
            lambda c: c["governance"]["virtual_keys"][0]["provider_configs"][0].update(key_ids=["missing"]),
            "governance.virtual_keys[0].provider_configs[0].key_ids",
        ),
        (lambda c: c["governance"]["customers"][0].update(budget_id="nope"), "governance.customers[0].budget_id"),
        (
            lambda c: c["providers"]["openai"]["keys"][0].update(value="env.NOT_SET_ANYWHERE"),
            "providers.openai.keys[0].value",
        ),
        (lambda c: c["governance"]["teams"].append({"id": "team-ml", "name": "dup"}), "governance.teams[1].id"),
        (lambda c: c["governance"].update(virtual_keys="nope"), "governance.virtual_keys"),
        (
            lambda c: c["providers"].update(custom={"provider_type": "ollama", "keys": []}),
            "providers.custom.network_config.base_url",
        ),
    ],
)
def test_invalid_configs_name_the_json_path_and_write_nothing(tmp_path, mutate, path):
    config = copy.deepcopy(CONFIG)
    mutate(config)
    with pytest.raises(CommandError) as exc:
        run(tmp_path, config)
    assert f"  {path}: " in str(exc.value)
    assert "nothing was changed" in str(exc.value)
    assert set(snapshot().values()) == {0}


def test_a_conflict_found_while_applying_rolls_everything_back(tmp_path):
    from governance.services import virtual_key_create

    virtual_key_create(name="batch-key")  # same name, different id: the import must not half-apply
    with pytest.raises(CommandError) as exc:
        run(tmp_path, CONFIG)
    assert "governance.virtual_keys[1].name" in str(exc.value)
    assert Provider.objects.count() == 0 and VirtualKey.objects.count() == 1


def test_malformed_json_file_is_reported(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{nope")
    with pytest.raises(CommandError, match="invalid JSON"):
        call_command("import_bifrost_config", str(path))
