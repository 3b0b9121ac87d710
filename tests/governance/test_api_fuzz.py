"""Random JSON at every write endpoint: never a 5xx, never a partial write."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.models import (
    Budget,
    Customer,
    ModelConfig,
    PricingOverride,
    ProviderConfig,
    RateLimit,
    RoutingRule,
    Team,
    VirtualKey,
)
from governance.services import (
    customer_create,
    model_config_create,
    provider_create,
    routing_rule_create,
    team_create,
    virtual_key_create,
)

pytestmark = [pytest.mark.django_db, pytest.mark.fuzz]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["1d", "1M", "30s", "*", "openai", "6f1c2a57-0000-4000-8000-000000000000", "sk-bf-x", ""]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "name",
        "description",
        "is_active",
        "team_id",
        "customer_id",
        "budgets",
        "budget",
        "rate_limit",
        "provider_configs",
        "mcp_configs",
        "allow_all_providers",
        "expires_at",
        "value",
        "profile",
        "config",
        "claims",
        "max_limit",
        "reset_duration",
        "calendar_aligned",
        "request_max_limit",
        "provider",
        "key_ids",
        "allowed_models",
        "model_name",
        "scope_kind",
        "match_type",
        "pattern",
        "request_types",
        "patch",
        "pricing_patch",
        "virtual_key_id",
        "provider_id",
        "provider_key_id",
        "cel_expression",
        "targets",
        "fallbacks",
        "scope",
        "scope_id",
        "priority",
        "enabled",
    ]
)
bodies = st.one_of(json_values, st.dictionaries(field_names, json_values, max_size=6))


def counts() -> tuple[int, ...]:
    models = (VirtualKey, Team, Customer, Budget, RateLimit, ProviderConfig, ModelConfig)
    models += (PricingOverride,)
    models += (RoutingRule,)
    return tuple(m.objects.count() for m in models)


@pytest.fixture
def world():
    provider_create(name="openai", base_url="http://127.0.0.1:9/v1")
    customer = customer_create(name="c", budgets=[{"max_limit": 1, "reset_duration": "1d"}])
    team = team_create(name="t", customer=customer)
    vk, _ = virtual_key_create(name="svc", team=team, budgets=[{"max_limit": 1, "reset_duration": "1d"}])
    config = model_config_create(model_name="gpt-4o", budgets=[{"max_limit": 1, "reset_duration": "1d"}])
    override = PricingOverride.objects.create(name="o", pattern="gpt-4o", cost_per_request=1)
    rule = routing_rule_create(name="r", cel_expression='model == "gpt-4o"', targets=[{"provider": "openai"}])
    return {"vk": vk.pk, "team": team.pk, "customer": customer.pk, "mc": config.pk, "po": override.pk, "rr": rule.pk}


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/governance/virtual-keys"),
        ("put", "/api/governance/virtual-keys/{vk}"),
        ("post", "/api/governance/teams"),
        ("put", "/api/governance/teams/{team}"),
        ("post", "/api/governance/customers"),
        ("put", "/api/governance/customers/{customer}"),
        ("post", "/api/governance/model-configs"),
        ("put", "/api/governance/model-configs/{mc}"),
        ("put", "/api/governance/providers/openai"),
        ("post", "/api/governance/pricing-overrides"),
        ("put", "/api/governance/pricing-overrides/{po}"),
        ("post", "/api/governance/routing-rules"),
        ("put", "/api/governance/routing-rules/{rr}"),
    ],
)
def test_random_json_never_5xx_and_failures_write_nothing(alice_api, world, method, path):
    url = path.format(**world)

    @FUZZ
    @given(body=bodies)
    def run(body):
        before = counts()
        response = getattr(alice_api, method)(url, body, format="json")
        assert response.status_code < 500, (body, response.content)
        assert response["Content-Type"] == "application/json"
        if response.status_code >= 400:
            assert response.json()["error"]["message"]
            assert counts() == before, body

    run()
