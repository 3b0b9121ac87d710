"""Routing rules on the proxy's path, in this process against the mock upstream: scope chain,
priority, first match, no match, the variables (headers without credentials, params, the key's
hierarchy, live capacity), targets and fallbacks, key pins, allow-lists, and a change applying on
the next request."""

from __future__ import annotations

from decimal import Decimal

import pytest

from governance.metering import capacity
from governance.models import Budget, ModelPrice, RoutingRule, UsageRecord
from governance.routing_rules import RuleBook
from governance.services import (
    customer_create,
    provider_create,
    provider_key_create,
    routing_rule_create,
    routing_rule_delete,
    routing_rule_update,
    team_create,
    virtual_key_create,
)
from proxy import rules
from tests.proxy.conftest import make_setup

pytestmark = pytest.mark.django_db

CHAT = "/v1/chat/completions"
CHEAP_KEY = "sk-cheap-upstream-secret"
ALL = {"allowed_models": ["*"], "key_ids": ["*"]}


def chat(model: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 3, **extra}


@pytest.fixture(autouse=True)
def fresh_capacity(monkeypatch):
    """Capacity figures read fresh on every request (production mode would reuse them up to 1 s)."""
    monkeypatch.setattr(capacity, "CACHE_SECONDS", 0.0)
    capacity.forget()
    yield
    capacity.forget()


@pytest.fixture
def world(mock):
    """openai, anthropic and ``cheap`` (OpenAI-type) on the mock; a VK allowed all three, in a team
    of a customer."""
    cheap = provider_create(name="cheap", provider_type="openai", base_url=mock.url, timeout_seconds=2.0)
    cheap_key = provider_key_create(provider=cheap, name="main", value=CHEAP_KEY)
    customer = customer_create(name="acme")
    team = team_create(name="research", customer=customer)
    setup = make_setup(
        mock.url,
        team=team,
        provider_configs=[
            {"provider": "openai", "weight": 1.0, **ALL},
            {"provider": "anthropic", "weight": None, **ALL},
            {"provider": "cheap", "weight": None, **ALL},
        ],
    )
    return {"setup": setup, "cheap": cheap, "cheap_key": cheap_key, "team": team, "customer": customer}


def send(call, world, model: str = "gpt-4o", headers: dict | None = None, **extra):
    answer = call(CHAT, chat(model, **extra), {"x-bf-vk": world["setup"].value, **(headers or {})})
    assert answer.status == 200, answer.body
    return answer


def provider_of(answer) -> str:
    return answer.json()["extra_fields"]["provider"]


def rule(name: str, expression: str, provider: str = "cheap", **fields) -> RoutingRule:
    fields.setdefault("targets", [{"provider": provider}])
    return routing_rule_create(name=name, cel_expression=expression, **fields)


# --- matching ------------------------------------------------------------------------------------


def test_a_matching_rule_sends_the_request_to_its_target(call, world, mock):
    rule("to-cheap", 'model == "gpt-4o"')
    answer = send(call, world)
    assert provider_of(answer) == "cheap"
    assert answer.json()["extra_fields"]["original_model_requested"] == "gpt-4o"
    last = mock.stats()["last_request"]
    assert last["body"]["model"] == "gpt-4o"
    assert last["headers"]["authorization"] == f"Bearer {CHEAP_KEY}"
    record = UsageRecord.objects.get()
    assert (record.provider, record.model, record.provider_key_id) == ("cheap", "gpt-4o", world["cheap_key"].pk)


def test_no_match_leaves_the_request_as_it_came(call, world, mock):
    rule("to-cheap", 'model == "gpt-4o"')
    answer = send(call, world, "gpt-4o-mini")
    assert provider_of(answer) == "openai"  # the VK's weighted config, as without rules
    assert mock.stats()["last_request"]["headers"]["authorization"] == "Bearer sk-upstream-openai-secret"


def test_scope_chain_virtual_key_then_team_then_customer_then_global(call, world):
    setup = world["setup"]
    scoped = [
        ("virtual_key", str(setup.vk.pk), "cheap"),
        ("team", str(world["team"].pk), "anthropic"),
        ("customer", str(world["customer"].pk), "openai"),
    ]
    made = [
        rule(f"r-{scope}", "true", provider, scope=scope, scope_id=scope_id) for scope, scope_id, provider in scoped
    ]
    rule("r-global", "true", "cheap", targets=[{"provider": "cheap", "model": "global-model"}])
    expected = ["cheap", "anthropic", "openai"]
    for index, made_rule in enumerate(made):
        assert provider_of(send(call, world)) == expected[index]
        routing_rule_delete(rule=made_rule)
    assert send(call, world).json()["extra_fields"]["resolved_model_used"] == "global-model"


def test_a_key_without_team_skips_to_global(call, world, mock):
    rule("r-team", "true", "anthropic", scope="team", scope_id=str(world["team"].pk))
    rule("r-global", "true", "cheap")
    _vk, value = virtual_key_create(name="loner", provider_configs=[{"provider": "cheap", "weight": 1, **ALL}])
    answer = call(CHAT, chat("gpt-4o"), {"x-bf-vk": value})
    assert provider_of(answer) == "cheap"


def test_lower_priority_first_the_first_match_wins_and_disabled_rules_are_skipped(call, world):
    rule("late", "true", "anthropic", priority=20)
    rule("early", "true", "cheap", priority=10)
    rule("earliest-but-no-match", 'model == "other"', "openai", priority=0)
    assert provider_of(send(call, world)) == "cheap"
    routing_rule_update(rule=RoutingRule.objects.get(name="early"), enabled=False)
    assert provider_of(send(call, world)) == "anthropic"


def test_a_failing_expression_does_not_match(call, world):
    rule("needs-header", 'headers["x-tier"] == "gold"', "cheap")
    assert provider_of(send(call, world)) == "openai"  # no x-tier header: evaluation error = no match
    assert provider_of(send(call, world, headers={"X-Tier": "gold"})) == "cheap"


# --- variables -----------------------------------------------------------------------------------


def test_headers_are_lower_cased_and_never_carry_credentials(call, world):
    rule("creds", '"authorization" in headers || "x-bf-vk" in headers || "cookie" in headers', "anthropic")
    rule("tier", 'headers["X-Tier"] == "gold" && headers["user-agent"].startsWith("sdk/")', "cheap", priority=1)
    answer = send(
        call,
        world,
        headers={"X-Tier": "gold", "User-Agent": "sdk/1.0", "Authorization": "Bearer sk-bf-nope", "Cookie": "a=b"},
    )
    assert provider_of(answer) == "cheap"


def test_params_are_the_body_s_top_level_scalars(call, world):
    rule("long", "params.max_tokens > 100", "anthropic")
    rule(
        "streamless-cold",
        'params.stream == false && params.temperature < 0.5 && params.user == "u1"',
        "cheap",
        priority=1,
    )
    assert provider_of(send(call, world, stream=False, temperature=0.2, user="u1")) == "cheap"
    assert provider_of(send(call, world, temperature=0.9)) == "openai"
    answer = call(CHAT, {**chat("gpt-4o"), "max_tokens": 500}, {"x-bf-vk": world["setup"].value})
    assert provider_of(answer) == "anthropic"


def test_provider_and_model_are_what_was_asked(call, world):
    rule("prefixed", 'provider == "openai" && model == "gpt-4o" && request_type == "chat_completion"', "cheap")
    assert provider_of(send(call, world, "openai/gpt-4o")) == "cheap"
    assert provider_of(send(call, world, "gpt-4o")) == "openai"  # unprefixed: provider is ""


def test_the_key_s_hierarchy_by_map_and_by_bifrost_s_flat_names(call, world):
    setup, team, customer = world["setup"], world["team"], world["customer"]
    expression = (
        f'virtual_key.name == "app" && virtual_key.id == "{setup.vk.pk}" && team.name == "research" '
        f'&& customer.id == "{customer.pk}" && team_name == "research" && customer_name == "acme" '
        f'&& virtual_key_id == "{setup.vk.pk}" && team_id == "{team.pk}"'
    )
    rule("who", expression, "cheap")
    assert provider_of(send(call, world)) == "cheap"


def test_capacity_figures_follow_the_live_counters(call, world):
    team, setup = world["team"], world["setup"]
    from governance.services import team_update

    team_update(
        team=team,
        budgets=[{"max_limit": Decimal("1"), "reset_duration": "1d"}],
        rate_limit={"request_max_limit": 4, "request_reset_duration": "1h"},
    )
    ModelPrice.objects.create(
        provider="openai", model="gpt-4o", input_cost_per_token=Decimal("0.01"), output_cost_per_token=Decimal("0.01")
    )
    send(call, world)  # 10 prompt + 3 completion tokens at $0.01: $0.13 of $1, 1 of 4 requests
    from governance.metering import snapshot

    vk = snapshot.virtual_key(setup.value)
    use = capacity.level_use(vk, ["virtual_key", "team", "customer"])
    assert use["team"].budget_used_percent == pytest.approx(13.0)
    assert use["team"].rate_limit_used_percent == pytest.approx(25.0)
    assert use["virtual_key"] == use["customer"] == capacity.NO_USE
    rule("rate", "team.rate_limit_used_percent >= 50.0 && request >= 50.0", "cheap")
    assert provider_of(send(call, world)) == "openai"  # 1 of 4 used when it is evaluated
    assert provider_of(send(call, world)) == "cheap"  # 2 of 4 used


def test_a_team_s_gpt_4o_goes_to_another_provider_once_its_budget_passes_half(call, world, mock, alice_api):
    """The issue's walk-through: a team budget, a rule through the API, traffic, the ledger."""
    team_budget = {"max_limit": 0.03, "reset_duration": "1M"}
    assert (
        alice_api.put(
            f"/api/governance/teams/{world['team'].pk}", {"budgets": [team_budget]}, format="json"
        ).status_code
        == 200
    )
    for provider, price in (("openai", Decimal("0.001")), ("cheap", Decimal("0.0001"))):
        ModelPrice.objects.create(
            provider=provider, model="gpt-4o", input_cost_per_token=price, output_cost_per_token=2 * price
        )
    body = {
        "name": "team-overflow",
        "cel_expression": 'model == "gpt-4o" && team.budget_used_percent > 50.0',
        "targets": [{"provider": "cheap", "weight": 1}],
        "scope": "team",
        "scope_id": str(world["team"].pk),
    }
    assert alice_api.post("/api/governance/routing-rules", body, format="json").status_code == 200
    first = send(call, world)  # $0.016 of $0.03 spent: 53 %
    assert provider_of(first) == "openai"
    assert mock.stats()["last_request"]["headers"]["authorization"] == "Bearer sk-upstream-openai-secret"
    assert Budget.objects.get(team=world["team"]).current_usage == Decimal("0.016")
    second = send(call, world)
    assert provider_of(second) == "cheap"
    last = mock.stats()["last_request"]
    assert (last["body"]["model"], last["headers"]["authorization"]) == ("gpt-4o", f"Bearer {CHEAP_KEY}")
    assert list(UsageRecord.objects.order_by("created_at", "id").values_list("provider", "model")) == [
        ("openai", "gpt-4o"),
        ("cheap", "gpt-4o"),
    ]


# --- targets, fallbacks, keys, allow-lists -------------------------------------------------------


def test_candidates_are_the_targets_then_the_rule_s_fallbacks_then_the_request_s(call, world):
    rule(
        "chain",
        "true",
        targets=[
            {"provider": "cheap", "model": "fail-500", "weight": 1.0},
            {"provider": "openai", "model": "fail-429", "weight": 0.0},
        ],
        fallbacks=["cheap/fail-500-again"],
    )
    answer = send(call, world, fallbacks=["openai/gpt-4o-mini"])
    assert answer.json()["extra_fields"]["resolved_model_used"] == "gpt-4o-mini"
    attempts = list(UsageRecord.objects.order_by("created_at", "id").values_list("provider", "model", "status_code"))
    assert attempts == [
        ("cheap", "fail-500", 500),
        ("openai", "fail-429", 429),
        ("cheap", "fail-500-again", 500),
        ("openai", "gpt-4o-mini", 200),
    ]


def test_targets_are_picked_by_weight(call, world):
    rule("split", "true", targets=[{"provider": "cheap", "weight": 0.5}, {"provider": "anthropic", "weight": 0.5}])
    assert {provider_of(send(call, world)) for _ in range(30)} == {"cheap", "anthropic"}


def test_a_target_without_provider_keeps_the_request_s(call, world):
    rule("downgrade", 'model == "gpt-4o"', targets=[{"model": "gpt-4o-mini"}])
    answer = send(call, world, "anthropic/gpt-4o")
    assert (provider_of(answer), answer.json()["extra_fields"]["resolved_model_used"]) == ("anthropic", "gpt-4o-mini")
    answer = send(call, world, "gpt-4o")  # unprefixed: the VK's weighted configs, as asked
    assert (provider_of(answer), answer.json()["extra_fields"]["resolved_model_used"]) == ("openai", "gpt-4o-mini")


def test_a_provider_only_fallback_keeps_the_asked_model(call, world):
    rule("keep", 'model == "gpt-4o"', targets=[{"provider": "openai", "model": "fail-500"}], fallbacks=["cheap/"])
    answer = send(call, world)
    assert (provider_of(answer), answer.json()["extra_fields"]["resolved_model_used"]) == ("cheap", "gpt-4o")


def test_a_pinned_key_is_used_and_the_vk_s_key_allow_list_still_applies(call, world):
    cheap = world["cheap"]
    spare = provider_key_create(provider=cheap, name="spare", value="sk-cheap-spare-secret")
    rule("pin", "true", targets=[{"provider": "cheap", "key_id": str(spare.pk)}])
    send(call, world)
    assert UsageRecord.objects.get().provider_key_id == spare.pk
    from governance.services import virtual_key_update

    virtual_key_update(
        vk=world["setup"].vk,
        provider_configs=[
            {"provider": "openai", "weight": 1.0, **ALL},
            {"provider": "cheap", "weight": None, "allowed_models": ["*"], "key_ids": [str(world["cheap_key"].pk)]},
        ],
    )
    answer = call(CHAT, chat("gpt-4o"), {"x-bf-vk": world["setup"].value})
    assert answer.status == 403 and answer.json()["type"] == "key_blocked"


def test_allow_lists_apply_to_rule_targets(call, world):
    blocked = provider_create(name="blocked", base_url="http://127.0.0.1:9")
    provider_key_create(provider=blocked, name="k", value="sk-blocked-secret")
    rule("nope", "true", targets=[{"provider": "blocked"}])
    answer = call(CHAT, chat("gpt-4o"), {"x-bf-vk": world["setup"].value})
    assert answer.status == 403 and answer.json()["type"] == "provider_blocked"


# --- freshness and cost ----------------------------------------------------------------------------


def test_a_change_applies_on_the_next_request(call, world, alice_api):
    assert provider_of(send(call, world)) == "openai"
    body = {"name": "now", "cel_expression": 'model == "gpt-4o"', "targets": [{"provider": "cheap"}]}
    created = alice_api.post("/api/governance/routing-rules", body, format="json").json()["rule"]
    assert provider_of(send(call, world)) == "cheap"
    alice_api.put(
        f"/api/governance/routing-rules/{created['id']}", {"targets": [{"provider": "anthropic"}]}, format="json"
    )
    assert provider_of(send(call, world)) == "anthropic"
    alice_api.put(f"/api/governance/routing-rules/{created['id']}", {"enabled": False}, format="json")
    assert provider_of(send(call, world)) == "openai"


def test_no_rules_cost_no_evaluation_and_rules_without_capacity_read_no_counters(call, world, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("must not be called")

    monkeypatch.setattr(rules, "evaluate", forbidden)
    monkeypatch.setattr(capacity, "level_use", forbidden)
    send(call, world)  # no rules: neither CEL nor the counters
    monkeypatch.undo()
    monkeypatch.setattr(capacity, "level_use", forbidden)
    monkeypatch.setattr(capacity, "CACHE_SECONDS", 0.0)
    rule("plain", 'model == "gpt-4o" && team.name == "research" && headers["x-a"] == "1"', "cheap")
    assert provider_of(send(call, world, headers={"x-a": "1"})) == "cheap"


def test_the_rule_book_is_loaded_once_per_configuration_generation(call, world, django_assert_num_queries):
    from governance.metering import snapshot

    rule("once", 'model == "gpt-4o"', "cheap")
    send(call, world)
    with django_assert_num_queries(2):  # the usage row and its rollups only: rules, VK, providers, prices all cached
        send(call, world)
    assert isinstance(snapshot.routing_rules(), RuleBook) and snapshot.routing_rules()


def test_a_target_whose_provider_was_deleted_is_skipped(call, world):
    from governance.services import provider_delete

    gone = provider_create(name="gone", base_url="http://127.0.0.1:9")
    rule("to-gone", "true", targets=[{"provider": "gone", "weight": 0.5}, {"provider": "cheap", "weight": 0.5}])
    rule("only-gone", 'model == "gpt-4o-mini"', targets=[{"provider": "gone"}], fallbacks=["cheap/"], priority=-1)
    provider_delete(provider=gone)
    assert {provider_of(send(call, world)) for _ in range(10)} == {"cheap"}
    answer = send(call, world, "gpt-4o-mini")  # no target left: the request's own provider leads
    assert provider_of(answer) == "openai"
