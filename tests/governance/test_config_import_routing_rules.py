"""``import_bifrost_config`` and ``governance.routing_rules``: validated like the API, errors under
their JSON paths, scope ids and key names of the file resolved, idempotent re-import."""

from __future__ import annotations

import copy
import json

import pytest
from django.core.management import CommandError, call_command

from governance.models import RoutingRule
from governance.services import provider_create, provider_key_create, routing_rule_create

pytestmark = pytest.mark.django_db

CONFIG = {
    "providers": {
        "openai": {"keys": [{"name": "main", "value": "sk-openai-import-1"}], "network_config": {}},
        "azure-east": {
            "provider_type": "openai",
            "keys": [{"name": "east", "value": "sk-east-import-2"}],
            "network_config": {"base_url": "http://127.0.0.1:9/v1"},
        },
    },
    "governance": {
        "customers": [{"id": "acme", "name": "Acme"}],
        "teams": [{"id": "ml", "name": "ML", "customer_id": "acme"}],
        "virtual_keys": [{"id": "vk-1", "name": "svc", "team_id": "ml"}],
        "routing_rules": [
            {
                "id": "overflow",
                "name": "overflow",
                "cel_expression": 'model == "gpt-4o" && team.budget_used_percent > 90.0',
                "targets": [{"provider": "azure-east", "key_id": "east", "weight": 1}],
                "fallbacks": ["openai/gpt-4o-mini"],
                "scope": "team",
                "scope_id": "ml",
            },
            {
                "id": "vk-rule",
                "name": "vk-rule",
                "cel_expression": 'headers["x-tier"] == "gold"',
                "targets": [{"provider": "openai", "model": "gpt-4o", "weight": 1}],
                "scope": "virtual_key",
                "scope_id": "vk-1",
                "priority": 3,
                "chain_rule": False,
            },
        ],
    },
}


def run(tmp_path, config) -> str:
    from io import StringIO

    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = StringIO()
    call_command("import_bifrost_config", str(path), stdout=out)
    return out.getvalue()


def test_rules_are_imported_with_scopes_and_keys_of_the_file(tmp_path):
    output = run(tmp_path, CONFIG)
    overflow = RoutingRule.objects.get(name="overflow")
    assert (overflow.scope, overflow.team.name, overflow.cel_expression) == (
        "team",
        "ML",
        'model == "gpt-4o" && team.budget_used_percent > 90.0',
    )
    from governance.models import ProviderKey

    east = ProviderKey.objects.get(name="east")
    assert overflow.targets == [{"provider": "azure-east", "model": None, "key_id": str(east.pk), "weight": 1.0}]
    assert overflow.fallbacks == ["openai/gpt-4o-mini"]
    vk_rule = RoutingRule.objects.get(name="vk-rule")
    assert (vk_rule.scope, vk_rule.virtual_key.name, vk_rule.priority) == ("virtual_key", "svc", 3)
    assert "governance.routing_rules[1].chain_rule" in output


def test_reimport_updates_the_same_rows(tmp_path):
    run(tmp_path, CONFIG)
    ids = set(RoutingRule.objects.values_list("pk", flat=True))
    changed = copy.deepcopy(CONFIG)
    changed["governance"]["routing_rules"][0]["priority"] = 42
    run(tmp_path, changed)
    assert set(RoutingRule.objects.values_list("pk", flat=True)) == ids
    assert RoutingRule.objects.get(name="overflow").priority == 42


@pytest.mark.parametrize(
    ("mutate", "path", "words"),
    [
        (lambda r: r.update(cel_expression="model =="), "governance.routing_rules[0].cel_expression", "Syntax error"),
        (lambda r: r.update(cel_expression="modle == 1"), "governance.routing_rules[0].cel_expression", "modle"),
        (lambda r: r.update(scope_id="no-team"), "governance.routing_rules[0].scope_id", "team 'no-team' not found"),
        (lambda r: r["targets"][0].update(provider="nope"), "governance.routing_rules[0].targets[0].provider", "nope"),
        (lambda r: r["targets"][0].update(key_id="west"), "governance.routing_rules[0].targets[0].key_id", "west"),
        (lambda r: r["targets"][0].update(weight=0.5), "governance.routing_rules[0].targets", "sum to 1"),
        (lambda r: r.update(fallbacks=["mystery/x"]), "governance.routing_rules[0].fallbacks[0]", "not configured"),
        (lambda r: r.pop("targets"), "governance.routing_rules[0].targets", "is required"),
        (lambda r: r.update(scope="user"), "governance.routing_rules[0].scope", "invalid scope 'user'"),
    ],
)
def test_invalid_rules_name_the_json_path_and_write_nothing(tmp_path, mutate, path, words):
    config = copy.deepcopy(CONFIG)
    mutate(config["governance"]["routing_rules"][0])
    with pytest.raises(CommandError) as exc:
        run(tmp_path, config)
    line = next(line for line in str(exc.value).splitlines() if line.strip().startswith(f"{path}: "))
    assert words in line
    assert not RoutingRule.objects.exists()


def test_two_rules_of_one_scope_may_not_share_a_name(tmp_path):
    config = copy.deepcopy(CONFIG)
    config["governance"]["routing_rules"][1].update(name="overflow", scope="team", scope_id="ml")
    with pytest.raises(CommandError, match=r"governance\.routing_rules\[1\]\.name: duplicate routing rule name"):
        run(tmp_path, config)


def test_a_name_taken_in_the_database_is_reported_under_the_rule_s_path(tmp_path):
    openai = provider_create(name="openai", base_url="http://127.0.0.1:9")
    provider_key_create(provider=openai, name="main", value="sk-openai-import-1")
    routing_rule_create(name="premium", targets=[{"provider": "openai"}])
    config = copy.deepcopy(CONFIG)
    config["governance"]["routing_rules"] = [{"id": "p", "name": "premium", "targets": [{"provider": "openai"}]}]
    with pytest.raises(CommandError, match=r"governance\.routing_rules\[0\]\.name: routing rule 'premium' already"):
        run(tmp_path, config)
    assert RoutingRule.objects.count() == 1
