"""Provider and provider-key management API (SPEC section 3)."""

from __future__ import annotations

import pytest

from governance.models import Provider, ProviderKey

pytestmark = pytest.mark.django_db

BODY = {
    "provider": "openai",
    "api_format": "openai",
    "network_config": {
        "base_url": "http://127.0.0.1:9000",
        "default_request_timeout_in_seconds": 30,
        "extra_headers": {"x-team": "a"},
    },
}
KEY = {"name": "k1", "value": "sk-secret-value-1234", "models": ["*"], "weight": 1.0, "enabled": True}


def create(api, body=None):
    return api.post("/api/providers", body or BODY, format="json")


def test_create_get_list_provider(alice_api):
    response = create(alice_api)
    assert response.status_code == 200, response.content
    provider = response.json()["provider"]
    assert response.json()["message"] == "Provider created successfully"
    assert provider["name"] == "openai" and provider["provider_type"] == provider["api_format"] == "openai"
    assert provider["network_config"] == {
        "base_url": "http://127.0.0.1:9000",
        "effective_base_url": "http://127.0.0.1:9000",
        "default_request_timeout_in_seconds": 30.0,
        "extra_headers": {"x-team": "a"},
    }
    assert alice_api.get("/api/providers/openai").json()["provider"]["id"] == provider["id"]
    listing = alice_api.get("/api/providers").json()
    assert listing["total"] == 1 and listing["providers"][0]["name"] == "openai"


def test_provider_type_defaults_to_anthropic_for_the_anthropic_provider(alice_api):
    body = {"provider": "anthropic", "network_config": {"base_url": "http://127.0.0.1:9000"}}
    provider = create(alice_api, body).json()["provider"]
    assert provider["provider_type"] == provider["api_format"] == "anthropic"


@pytest.mark.parametrize(
    "body, field",
    [
        ({**BODY, "provider": "Bad/Name"}, "provider"),
        ({**BODY, "api_format": "soap"}, "api_format"),
        ({**BODY, "provider_type": "soap"}, "provider_type"),
        ({**BODY, "network_config": {"base_url": "not a url"}}, "network_config.base_url"),
        (
            {**BODY, "network_config": {"base_url": "http://127.0.0.1:1", "default_request_timeout_in_seconds": 0}},
            "network_config.default_request_timeout_in_seconds",
        ),
        ({"provider": "local", "provider_type": "vllm"}, "network_config.base_url"),
        (
            {**BODY, "api_format": "ollama", "network_config": {"default_request_timeout_in_seconds": 5}},
            "network_config.base_url",
        ),
        (
            {**BODY, "network_config": {"base_url": "http://127.0.0.1:1", "extra_headers": {"bad name": "v"}}},
            "network_config.extra_headers",
        ),
    ],
)
def test_invalid_provider_is_400_naming_the_field(alice_api, body, field):
    response = create(alice_api, body)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(field)
    assert not Provider.objects.exists()


def test_duplicate_provider_is_400(alice_api):
    create(alice_api)
    response = create(alice_api)
    assert response.status_code == 400 and "already exists" in response.json()["error"]["message"]


def test_malformed_json_is_400(alice_api):
    response = alice_api.post("/api/providers", "{oops", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["message"] == "Invalid JSON"


def test_update_and_delete_provider(alice_api):
    create(alice_api)
    response = alice_api.put(
        "/api/providers/openai", {"network_config": {"base_url": "http://10.0.0.1:1234"}}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["provider"]["network_config"]["base_url"] == "http://10.0.0.1:1234"
    assert alice_api.delete("/api/providers/openai").json() == {"message": "Provider deleted successfully"}
    assert not Provider.objects.exists()


def test_unknown_provider_is_404(alice_api):
    for response in (
        alice_api.get("/api/providers/nope"),
        alice_api.put("/api/providers/nope", {}, format="json"),
        alice_api.delete("/api/providers/nope"),
        alice_api.get("/api/providers/nope/keys"),
    ):
        assert response.status_code == 404 and response.json()["error"]["message"] == "Provider not found"


def test_key_value_is_write_only_and_masked_everywhere(alice_api):
    create(alice_api)
    response = alice_api.post("/api/providers/openai/keys", KEY, format="json")
    assert response.status_code == 200, response.content
    key = response.json()["key"]
    assert key["value"] == "…1234" and key["name"] == "k1" and key["models"] == ["*"]
    assert ProviderKey.objects.get().value == "sk-secret-value-1234"
    for path in (
        "/api/providers/openai",
        "/api/providers/openai/keys",
        f"/api/providers/openai/keys/{key['id']}",
        "/api/keys",
        "/api/providers",
    ):
        content = alice_api.get(path).content.decode()
        assert "sk-secret-value-1234" not in content and "…1234" in content


def test_update_key_replaces_value_and_patches_fields(alice_api):
    create(alice_api)
    key_id = alice_api.post("/api/providers/openai/keys", KEY, format="json").json()["key"]["id"]
    response = alice_api.put(
        f"/api/providers/openai/keys/{key_id}", {"value": "sk-new-9999", "enabled": False}, format="json"
    )
    assert response.json()["key"]["value"] == "…9999" and response.json()["key"]["enabled"] is False
    assert ProviderKey.objects.get().value == "sk-new-9999"
    assert alice_api.delete(f"/api/providers/openai/keys/{key_id}").status_code == 200
    assert not ProviderKey.objects.exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({**KEY, "value": ""}, "value"),
        ({k: v for k, v in KEY.items() if k != "name"}, "name"),
        ({**KEY, "models": ["*", "gpt-4o"]}, "models"),
        ({**KEY, "models": ["a", "a"]}, "models"),
        ({**KEY, "weight": -1}, "weight"),
        ({**KEY, "enabled": "yes"}, "enabled"),
    ],
)
def test_invalid_key_is_400_naming_the_field(alice_api, body, field):
    create(alice_api)
    response = alice_api.post("/api/providers/openai/keys", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(field)
    assert not ProviderKey.objects.exists()


def test_unknown_key_is_404(alice_api):
    create(alice_api)
    for key_id in ("not-a-uuid", "00000000-0000-4000-8000-000000000000"):
        response = alice_api.get(f"/api/providers/openai/keys/{key_id}")
        assert response.status_code == 404 and response.json()["error"]["message"] == "Key not found"


def test_view_only_user_can_read_but_not_write(alice_api, bob_api, anon_api):
    create(alice_api)
    assert bob_api.get("/api/providers").status_code == 200
    assert bob_api.post("/api/providers", {**BODY, "provider": "other"}, format="json").status_code == 403
    assert bob_api.post("/api/providers/openai/keys", KEY, format="json").status_code == 403
    assert anon_api.get("/api/providers").status_code == 401
    assert anon_api.get("/api/keys").status_code == 401


def test_create_takes_the_providers_keys_as_bifrost_does(alice_api):
    second = {**KEY, "name": "k2", "value": "sk-secret-value-5678"}
    response = create(alice_api, {**BODY, "keys": [KEY, second]})
    assert response.status_code == 200, response.content
    assert sorted(k["name"] for k in response.json()["provider"]["keys"]) == ["k1", "k2"]
    assert "sk-secret-value" not in response.content.decode()
    assert sorted(ProviderKey.objects.values_list("name", flat=True)) == ["k1", "k2"]


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ([{**KEY, "value": ""}], "keys[0]"),
        ([KEY, {**KEY, "value": "sk-other-value-0000"}], "appears twice"),
        ("k1", "keys"),
    ],
)
def test_a_bad_key_in_a_create_is_400_and_writes_nothing(alice_api, keys, named):
    response = create(alice_api, {**BODY, "keys": keys})
    assert response.status_code == 400 and named in response.json()["error"]["message"]
    assert not Provider.objects.exists() and not ProviderKey.objects.exists()


def test_keys_are_not_replaced_through_a_provider_update(alice_api):
    create(alice_api, {**BODY, "keys": [KEY]})
    response = alice_api.put("/api/providers/openai", {"keys": []}, format="json")
    assert response.status_code == 400 and "/api/providers/{name}/keys" in response.json()["error"]["message"]
    assert ProviderKey.objects.count() == 1
