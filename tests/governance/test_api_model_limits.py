"""``/api/governance/model-configs`` and ``/api/governance/providers``: limits on all traffic for a
model or to a provider, their services, live usage in the budget and rate-limit lists and the
quota endpoint, and the OpenAPI document."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from drf_spectacular.generators import SchemaGenerator

from governance.models import Budget, ModelConfig, Provider, RateLimit
from governance.services import (
    ModelConfigConflict,
    model_config_create,
    model_config_update,
    provider_create,
    provider_governance_delete,
    provider_governance_set,
    virtual_key_create,
)

pytestmark = pytest.mark.django_db

GOV = "/api/governance"
MODELS = f"{GOV}/model-configs"
PROVIDERS = f"{GOV}/providers"
PER_MINUTE = {"request_max_limit": 500, "request_reset_duration": "1m"}


@pytest.fixture
def openai():
    return provider_create(name="openai", base_url="http://127.0.0.1:9")


@pytest.fixture
def anthropic():
    return provider_create(name="anthropic", base_url="http://127.0.0.1:9")


def message(response, status: int) -> str:
    assert response.status_code == status, response.content
    return response.json()["error"]["message"]


# --- services ----------------------------------------------------------------------------------


def test_services_keep_one_config_per_model_and_provider(openai):
    anywhere = model_config_create(model_name="gpt-4o", rate_limit=PER_MINUTE)
    on_openai = model_config_create(model_name="gpt-4o", provider=openai)
    with pytest.raises(ModelConfigConflict, match="every provider"):
        model_config_create(model_name="gpt-4o")
    with pytest.raises(ModelConfigConflict, match="provider 'openai'"):
        model_config_update(model_config=anywhere, provider=openai)
    model_config_update(
        model_config=on_openai, model_name="gpt-4o-mini", budgets=[{"max_limit": 1, "reset_duration": "1d"}]
    )
    assert ModelConfig.objects.get(pk=on_openai.pk).model_name == "gpt-4o-mini"
    assert Budget.objects.get(model_config=on_openai).max_limit == 1
    with pytest.raises(ValidationError):
        model_config_create(model_name="*")


def test_provider_governance_is_patched_keeping_usage_and_deleted_leaving_the_provider(openai):
    provider_governance_set(
        provider=openai, budgets=[{"max_limit": 100, "reset_duration": "1M"}], rate_limit=PER_MINUTE
    )
    Budget.objects.filter(provider=openai).update(current_usage=Decimal("42"))
    provider_governance_set(provider=openai, budgets=[{"max_limit": 200, "reset_duration": "1M"}])
    budget = Budget.objects.get(provider=openai)
    assert (budget.max_limit, budget.current_usage) == (200, Decimal("42"))
    assert RateLimit.objects.get(provider=openai).request_max_limit == 500  # absent: kept
    provider_governance_delete(provider=openai)
    assert not Budget.objects.exists() and not RateLimit.objects.exists()
    assert Provider.objects.filter(pk=openai.pk).exists()


# --- model configs API -------------------------------------------------------------------------


def test_create_in_bifrosts_shape_with_a_single_budget(alice_api, openai):
    body = {
        "model_name": "gpt-4o",
        "provider": "openai",
        "budget": {"max_limit": 2000, "reset_duration": "1M"},
        "rate_limit": PER_MINUTE,
    }
    response = alice_api.post(MODELS, body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["message"] == "Model config created successfully"
    config = response.json()["model_config"]
    assert (config["model_name"], config["provider"]) == ("gpt-4o", "openai")
    assert [b["max_limit"] for b in config["budgets"]] == [2000.0]
    assert config["budget"] == config["budgets"][0]
    assert config["budget"]["owner"] == {"type": "model_config", "id": config["id"]}
    assert config["rate_limit"]["request_max_limit"] == 500
    assert config["rate_limit"]["owner"] == {"type": "model_config", "id": config["id"]}


def test_a_duplicate_is_409_naming_the_model_and_writes_nothing(alice_api, openai):
    assert alice_api.post(MODELS, {"model_name": "gpt-4o"}, format="json").status_code == 200
    assert alice_api.post(MODELS, {"model_name": "gpt-4o", "provider": "openai"}, format="json").status_code == 200

    body = {"model_name": "gpt-4o", "budgets": [{"max_limit": 1, "reset_duration": "1d"}]}
    again = alice_api.post(MODELS, body, format="json")
    assert message(again, 409) == "model_name: a model config for 'gpt-4o' on every provider already exists"
    other = alice_api.post(MODELS, {"model_name": "gpt-4o-mini", "provider": "openai"}, format="json")
    on_openai = alice_api.put(f"{MODELS}/{other.json()['model_config']['id']}", {"model_name": "gpt-4o"}, format="json")
    assert message(on_openai, 409) == "model_name: a model config for 'gpt-4o' on provider 'openai' already exists"
    assert ModelConfig.objects.count() == 3 and not Budget.objects.exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "model_name: This field is required."),
        ({"model_name": ""}, "model_name: This field may not be blank."),
        ({"model_name": 5}, "model_name: Not a valid string."),
        ({"model_name": "*"}, "model_name: '*' is not a model"),
        ({"model_name": "m", "provider": "nope"}, "provider: provider 'nope' does not exist"),
        ({"model_name": "m", "provider": 3}, "provider: Not a valid string."),
        ({"model_name": "m", "budgets": [{"max_limit": "10", "reset_duration": "1d"}]}, "budgets[0].max_limit: "),
        (
            {"model_name": "m", "budgets": [{"max_limit": 1, "reset_duration": "2 weeks"}]},
            "budgets[0].reset_duration: ",
        ),
        (
            {"model_name": "m", "budgets": [{"max_limit": 1, "reset_duration": "1d"}] * 2},
            "budgets[1].reset_duration: duplicate reset_duration '1d'",
        ),
        ({"model_name": "m", "rate_limit": {"request_max_limit": 5}}, "rate_limit.request_reset_duration: "),
        (
            {"model_name": "m", "rate_limit": {"token_max_limit": 0, "token_reset_duration": "1h"}},
            "rate_limit.token_max_limit: ",
        ),
        ({"model_name": "m", "budget": {"max_limit": 1, "reset_duration": "1d"}, "budgets": []}, "budget: send either"),
    ],
)
def test_bad_input_is_400_naming_the_field(alice_api, openai, body, expected):
    assert message(alice_api.post(MODELS, body, format="json"), 400).startswith(expected)
    assert not ModelConfig.objects.exists() and not Budget.objects.exists() and not RateLimit.objects.exists()


def test_put_patches_moves_between_providers_and_keeps_usage(alice_api, openai):
    created = alice_api.post(
        MODELS,
        {"model_name": "gpt-4o", "budgets": [{"max_limit": 10, "reset_duration": "1d"}], "rate_limit": PER_MINUTE},
        format="json",
    ).json()["model_config"]
    url = f"{MODELS}/{created['id']}"
    Budget.objects.filter(model_config_id=created["id"]).update(current_usage=Decimal("4"))

    moved = alice_api.put(
        url, {"provider": "openai", "budgets": [{"max_limit": 20, "reset_duration": "1d"}]}, format="json"
    )
    assert moved.status_code == 200, moved.content
    config = moved.json()["model_config"]
    assert config["provider"] == "openai" and config["model_name"] == "gpt-4o"
    assert [(b["max_limit"], b["current_usage"]) for b in config["budgets"]] == [(20.0, 4.0)]
    assert config["rate_limit"]["request_max_limit"] == 500

    back = alice_api.put(url, {"provider": None, "rate_limit": {}}, format="json").json()["model_config"]
    assert back["provider"] is None and back["rate_limit"] is None and len(back["budgets"]) == 1
    assert alice_api.delete(url).json() == {"message": "Model config deleted successfully"}
    assert not Budget.objects.exists()


def test_list_searches_sorts_and_pages(alice_api, openai):
    for name in ("gpt-4o", "gpt-4o-mini", "claude-sonnet"):
        model_config_create(model_name=name)
    model_config_create(model_name="gpt-4o", provider=openai)

    page = alice_api.get(MODELS, {"search": "GPT", "sort_by": "model_name", "order": "desc", "limit": 2}).json()
    assert [(c["model_name"], c["provider"]) for c in page["model_configs"]][0][0] == "gpt-4o-mini"
    assert (page["count"], page["total_count"], page["limit"], page["offset"]) == (2, 3, 2, 0)
    assert (
        message(alice_api.get(MODELS, {"sort_by": "name"}), 400)
        == "sort_by: sort_by must be one of model_name, created_at"
    )


def test_deleting_a_provider_deletes_its_model_configs_and_governance(alice_api, openai):
    model_config_create(model_name="gpt-4o", provider=openai, budgets=[{"max_limit": 1, "reset_duration": "1d"}])
    model_config_create(model_name="gpt-4o")
    provider_governance_set(provider=openai, rate_limit=PER_MINUTE)
    assert alice_api.delete("/api/providers/openai").status_code == 200
    assert list(ModelConfig.objects.values_list("model_name", "provider")) == [("gpt-4o", None)]
    assert not Budget.objects.exists() and not RateLimit.objects.exists()


# --- provider governance API -------------------------------------------------------------------


def test_put_sets_get_lists_with_live_usage_and_delete_removes(alice_api, openai, anthropic):
    assert alice_api.get(PROVIDERS).json() == {"providers": [], "count": 0}
    body = {"budget": {"max_limit": 1, "reset_duration": "1M", "calendar_aligned": True}, "rate_limit": PER_MINUTE}

    response = alice_api.put(f"{PROVIDERS}/openai", body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["message"] == "Provider governance updated successfully"
    shown = response.json()["provider"]
    assert (shown["id"], shown["provider"]) == (str(openai.pk), "openai")
    assert shown["budget"]["calendar_aligned"] is True and shown["budget"]["owner"]["type"] == "provider"
    Budget.objects.filter(provider=openai).update(current_usage=Decimal("0.25"))
    listed = alice_api.get(PROVIDERS).json()
    assert listed["count"] == 1 and listed["providers"][0]["budgets"][0]["current_usage"] == 0.25
    assert alice_api.get(f"{PROVIDERS}/openai").json()["provider"]["budget"]["current_usage"] == 0.25
    assert message(alice_api.get(f"{PROVIDERS}/anthropic"), 404) == "Provider governance not found"

    patched = alice_api.put(f"{PROVIDERS}/openai", {"rate_limit": {"request_max_limit": 600}}, format="json")
    assert patched.json()["provider"]["budget"]["current_usage"] == 0.25
    assert patched.json()["provider"]["rate_limit"]["request_max_limit"] == 600

    assert alice_api.delete(f"{PROVIDERS}/openai").json() == {"message": "Provider governance deleted successfully"}
    assert alice_api.get(PROVIDERS).json()["count"] == 0
    assert Provider.objects.filter(name="openai").exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"budgets": [{"max_limit": 0, "reset_duration": "1M"}]}, "budgets[0].max_limit: "),
        ({"budget": {"max_limit": 5}}, "budget.reset_duration: This field is required."),
        ({"rate_limit": {"request_max_limit": "9", "request_reset_duration": "1m"}}, "rate_limit.request_max_limit: "),
        ({"rate_limit": {"token_reset_duration": "1h"}}, "rate_limit.token_max_limit: "),
    ],
)
def test_provider_governance_bad_input_is_400_naming_the_field(alice_api, openai, body, expected):
    assert message(alice_api.put(f"{PROVIDERS}/openai", body, format="json"), 400).startswith(expected)
    assert not Budget.objects.exists() and not RateLimit.objects.exists()


def test_put_on_an_unknown_provider_is_404(alice_api):
    assert message(alice_api.put(f"{PROVIDERS}/nope", {"rate_limit": PER_MINUTE}, format="json"), 404) == (
        "Provider governance not found"
    )


# --- live usage everywhere ---------------------------------------------------------------------


def test_budget_and_rate_limit_lists_name_the_new_owners(alice_api, openai):
    config = model_config_create(
        model_name="gpt-4o", budgets=[{"max_limit": 5, "reset_duration": "1d"}], rate_limit=PER_MINUTE
    )
    provider_governance_set(provider=openai, budgets=[{"max_limit": 9, "reset_duration": "1M"}], rate_limit=PER_MINUTE)
    Budget.objects.filter(model_config=config).update(current_usage=Decimal("3"))

    budgets = {b["owner"]["type"]: b for b in alice_api.get(f"{GOV}/budgets").json()["budgets"]}
    assert budgets["model_config"]["owner"]["id"] == str(config.pk) and budgets["model_config"]["current_usage"] == 3
    assert budgets["provider"]["owner"]["id"] == str(openai.pk)
    limits = alice_api.get(f"{GOV}/rate-limits").json()["rate_limits"]
    assert {r["owner"]["type"] for r in limits} == {"model_config", "provider"}


def test_quota_shows_the_provider_and_model_limits_on_the_keys_paths(client, openai, anthropic):
    vk, value = virtual_key_create(
        name="svc",
        provider_configs=[{"provider": "openai", "weight": 1, "allowed_models": ["gpt-4o"], "key_ids": ["*"]}],
    )
    provider_governance_set(provider=openai, budgets=[{"max_limit": 9, "reset_duration": "1M"}])
    provider_governance_set(provider=anthropic, rate_limit=PER_MINUTE)  # not a provider the key may use
    model_config_create(model_name="gpt-4o", rate_limit=PER_MINUTE)
    model_config_create(model_name="gpt-4o", provider=openai)
    model_config_create(model_name="gpt-4o", provider=anthropic)  # not on its paths
    model_config_create(model_name="gpt-4o-mini")  # a model its config does not allow

    body = client.get(f"{GOV}/virtual-keys/quota", HTTP_X_BF_VK=value).json()

    assert [p["provider"] for p in body["provider_governance"]] == ["openai"]
    assert body["provider_governance"][0]["budget"]["max_limit"] == 9
    assert sorted((c["model_name"], c["provider"] or "") for c in body["model_configs"]) == [
        ("gpt-4o", ""),
        ("gpt-4o", "openai"),
    ]
    vk.allow_all_providers = True
    vk.save()
    body = client.get(f"{GOV}/virtual-keys/quota", HTTP_X_BF_VK=value).json()
    assert [p["provider"] for p in body["provider_governance"]] == ["anthropic", "openai"]
    assert len(body["model_configs"]) == 4  # gpt-4o-mini: on anthropic, which has no config to forbid it


def test_the_openapi_document_describes_both_resources():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    paths = schema["paths"]
    assert set(paths[MODELS]) == {"get", "post"} and set(paths[f"{MODELS}/{{id}}"]) == {"get", "put", "delete"}
    assert set(paths[PROVIDERS]) == {"get"} and set(paths[f"{PROVIDERS}/{{name}}"]) == {"get", "put", "delete"}
    assert "409" in paths[MODELS]["post"]["responses"] and "400" in paths[MODELS]["post"]["responses"]
    assert "404" in paths[f"{PROVIDERS}/{{name}}"]["put"]["responses"]
    components = schema["components"]["schemas"]
    assert {"model_name", "provider", "budgets", "budget", "rate_limit"} <= set(
        components["ModelConfigOut"]["properties"]
    )
    assert {"model_configs", "provider_governance"} <= set(components["QuotaOut"]["properties"])
