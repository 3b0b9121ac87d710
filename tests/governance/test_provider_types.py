"""Provider types (``governance.provider_types``) through the API, the admin and the config import.

A provider's type decides its wire format and its default base URL; Azure keys carry their own
endpoint and deployments in ``azure_key_config``. ``api_format`` is the old input name of the
type, and in answers the (read-only) wire format.
"""

from __future__ import annotations

import copy
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from governance.models import Provider, ProviderKey
from governance.provider_types import TYPES, ProviderType
from governance.services import provider_create
from tests.governance.test_admin_helpers import OWNER_INLINES, form_body

pytestmark = pytest.mark.django_db

AZURE_CONFIG = {"endpoint": "https://r.openai.azure.com", "deployments": {"gpt-4o": "prod-4o"}}
KEY = {"name": "k1", "value": "sk-azure-secret-value-1234"}


def create(api, body):
    return api.post("/api/providers", body, format="json")


def message(response) -> str:
    assert response.status_code == 400, response.content
    return response.json()["error"]["message"]


# --- the API ------------------------------------------------------------------------------------


def test_a_preset_needs_no_network_config(alice_api):
    response = create(alice_api, {"provider": "fast", "provider_type": "groq"})
    assert response.status_code == 200, response.content
    provider = response.json()["provider"]
    assert (provider["provider_type"], provider["api_format"]) == ("groq", "openai")
    assert provider["network_config"]["base_url"] == ""
    assert provider["network_config"]["effective_base_url"] == "https://api.groq.com/openai"
    assert alice_api.get("/api/providers/fast").json()["provider"] == provider
    row = Provider.objects.get()
    assert (row.provider_type, row.base_url, row.wire_format) == ("groq", "", "openai")


def test_a_type_without_a_default_url_needs_a_base_url(alice_api):
    text = message(create(alice_api, {"provider": "my-ollama", "provider_type": "ollama"}))
    assert text.startswith("network_config.base_url: ") and "ollama" in text
    assert not Provider.objects.exists()
    body = {"provider": "my-ollama", "provider_type": "ollama", "network_config": {"base_url": "http://10.0.0.5:11434"}}
    provider = create(alice_api, body).json()["provider"]
    assert provider["network_config"]["effective_base_url"] == "http://10.0.0.5:11434"


def test_a_provider_named_like_a_type_gets_that_type(alice_api):
    provider = create(alice_api, {"provider": "gemini"}).json()["provider"]
    assert (provider["provider_type"], provider["api_format"]) == ("gemini", "gemini")
    assert provider["network_config"]["effective_base_url"] == "https://generativelanguage.googleapis.com"
    other = create(alice_api, {"provider": "my-server", "network_config": {"base_url": "http://10.0.0.6"}})
    assert other.json()["provider"]["provider_type"] == "openai"  # any other name: OpenAI's format


def test_an_unknown_type_is_400_naming_provider_type(alice_api):
    assert message(create(alice_api, {"provider": "x", "provider_type": "soap"})).startswith("provider_type: ")
    assert not Provider.objects.exists()


def test_api_format_is_still_accepted_as_the_old_name_of_the_type(alice_api):
    response = create(alice_api, {"provider": "claude", "api_format": "anthropic"})
    assert response.status_code == 200, response.content
    provider = response.json()["provider"]
    assert (provider["provider_type"], provider["api_format"]) == ("anthropic", "anthropic")
    assert Provider.objects.get().provider_type == "anthropic"
    same = create(alice_api, {"provider": "claude2", "provider_type": "anthropic", "api_format": "anthropic"})
    assert same.status_code == 200, same.content


def test_api_format_contradicting_provider_type_is_400(alice_api):
    body = {"provider": "x", "provider_type": "groq", "api_format": "anthropic"}
    assert message(create(alice_api, body)).startswith("api_format: ")
    assert not Provider.objects.exists()


def test_put_patches_the_type_and_keeps_the_rest(alice_api):
    create(alice_api, {"provider": "fast", "provider_type": "groq", "network_config": {"extra_headers": {"x": "1"}}})
    response = alice_api.put("/api/providers/fast", {"provider_type": "mistral"}, format="json")
    assert response.status_code == 200, response.content
    provider = response.json()["provider"]
    assert (provider["provider_type"], provider["api_format"]) == ("mistral", "openai")
    assert provider["network_config"]["effective_base_url"] == "https://api.mistral.ai"
    assert provider["network_config"]["extra_headers"] == {"x": "1"}
    response = alice_api.put("/api/providers/fast", {"api_format": "anthropic"}, format="json")  # the old name
    assert response.json()["provider"]["provider_type"] == "anthropic"
    assert Provider.objects.get().provider_type == "anthropic"


@pytest.fixture
def azure(alice_api) -> str:
    response = create(alice_api, {"provider": "azure-prod", "provider_type": "azure"})
    assert response.status_code == 200, response.content
    assert response.json()["provider"]["network_config"]["effective_base_url"] == ""
    return "/api/providers/azure-prod/keys"


def test_an_azure_key_without_its_config_is_400(alice_api, azure):
    text = message(alice_api.post(azure, KEY, format="json"))
    assert text.startswith("azure_key_config: ") and "endpoint" in text
    assert not ProviderKey.objects.exists()


def test_an_azure_key_with_its_config_is_stored_and_returned_without_the_value(alice_api, azure):
    response = alice_api.post(azure, {**KEY, "azure_key_config": AZURE_CONFIG}, format="json")
    assert response.status_code == 200, response.content
    key = response.json()["key"]
    assert key["azure_key_config"] == AZURE_CONFIG and key["value"] == "…1234"
    assert ProviderKey.objects.get().azure_key_config == AZURE_CONFIG
    for path in (f"{azure}/{key['id']}", azure, "/api/providers/azure-prod", "/api/keys"):
        fetched = alice_api.get(path)
        assert AZURE_CONFIG["endpoint"] in fetched.content.decode(), path
        assert KEY["value"] not in fetched.content.decode(), path
    assert alice_api.get(f"{azure}/{key['id']}").json()["key"]["azure_key_config"] == AZURE_CONFIG


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({**AZURE_CONFIG, "endpoint": "r.openai.azure.com"}, "endpoint"),
        ({**AZURE_CONFIG, "deployments": {"gpt-4o": "prod/4o"}}, "deployments.gpt-4o"),
        ({**AZURE_CONFIG, "region": "eastus"}, "region"),
        ({**AZURE_CONFIG, "api_version": ""}, "api_version"),
        (["https://r.openai.azure.com"], "azure_key_config"),
    ],
)
def test_a_bad_azure_key_config_is_400_naming_the_sub_field(alice_api, azure, config, field):
    text = message(alice_api.post(azure, {**KEY, "azure_key_config": config}, format="json"))
    assert text.startswith("azure_key_config: ") and field in text
    assert not ProviderKey.objects.exists()


def test_an_azure_key_config_can_be_patched_but_not_broken(alice_api, azure):
    key_id = alice_api.post(azure, {**KEY, "azure_key_config": AZURE_CONFIG}, format="json").json()["key"]["id"]
    changed = {**AZURE_CONFIG, "api_version": "2025-01-01-preview"}
    response = alice_api.put(f"{azure}/{key_id}", {"azure_key_config": changed}, format="json")
    assert response.status_code == 200, response.content
    assert ProviderKey.objects.get().azure_key_config == changed
    broken = alice_api.put(f"{azure}/{key_id}", {"azure_key_config": {"deployments": {}}}, format="json")
    assert message(broken).startswith("azure_key_config: ")
    assert ProviderKey.objects.get().azure_key_config == changed
    weight = alice_api.put(f"{azure}/{key_id}", {"weight": 2}, format="json")  # other fields keep the config
    assert weight.json()["key"]["azure_key_config"] == changed


def test_azure_key_config_on_another_types_key_is_400(alice_api):
    create(alice_api, {"provider": "openai"})
    response = alice_api.post("/api/providers/openai/keys", {**KEY, "azure_key_config": AZURE_CONFIG}, format="json")
    text = message(response)
    assert text.startswith("azure_key_config: ") and "azure" in text
    assert not ProviderKey.objects.exists()
    plain = alice_api.post("/api/providers/openai/keys", KEY, format="json")
    assert plain.status_code == 200 and "azure_key_config" not in plain.json()["key"]


def test_the_schema_lists_every_provider_type(alice_api):
    response = alice_api.get("/api/governance/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    components = schema["components"]["schemas"]

    def enum_of(prop: dict) -> list[str]:
        ref = prop.get("$ref") or prop["allOf"][0]["$ref"]
        return components[ref.rsplit("/", 1)[1]]["enum"]

    every_type = [str(t) for t in ProviderType]
    assert len(every_type) == len(TYPES) == 14
    for component in ("ProviderInputRequest", "ProviderOut"):
        assert enum_of(components[component]["properties"]["provider_type"]) == every_type, component
    wire = components["ProviderOut"]["properties"]["api_format"]
    assert wire["type"] == "string" and "openai, anthropic, gemini" in wire["description"]
    assert "azure_key_config" in components["KeyOut"]["properties"]
    assert "azure_key_config" in components["ProviderKeyInputRequest"]["properties"]
    assert "effective_base_url" in components["NetworkConfigOut"]["properties"]


# --- the admin ----------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


def provider_body(**fields) -> dict:
    """The provider form, with its governance inlines (budgets, rate limit) left empty."""
    body = {"name": "azure-prod", "provider_type": "azure", "base_url": "", "timeout_seconds": "30"}
    return form_body(body | {"extra_headers": "{}"} | fields, OWNER_INLINES)


def key_body(provider: Provider, **fields) -> dict:
    return {
        "provider": str(provider.pk),
        "name": "main",
        "value": KEY["value"],
        "models": "*",
        "weight": "1",
        "enabled": "on",
        "azure_key_config": json.dumps(AZURE_CONFIG),
    } | fields


def test_admin_creates_an_azure_provider_and_a_key_with_its_config(admin_client):
    response = admin_client.post(reverse("admin:governance_provider_add"), provider_body())
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    provider = Provider.objects.get()
    assert (provider.provider_type, provider.base_url) == ("azure", "")

    response = admin_client.post(reverse("admin:governance_providerkey_add"), key_body(provider))
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    key = ProviderKey.objects.get()
    assert key.azure_key_config == AZURE_CONFIG and key.value == KEY["value"]

    page = admin_client.get(reverse("admin:governance_providerkey_change", args=[key.pk])).content.decode()
    assert "prod-4o" in page and KEY["value"] not in page
    listing = admin_client.get(reverse("admin:governance_provider_changelist")).content.decode()
    assert "Azure OpenAI" in listing  # the type column


def test_admin_key_form_shows_an_invalid_config_on_the_field_and_saves_nothing(admin_client):
    provider = provider_create(name="azure-prod", provider_type="azure")
    cases = {
        "": "endpoint",  # blank = {}: an Azure key needs its endpoint
        json.dumps({**AZURE_CONFIG, "deployments": {"gpt-4o": "a/b"}}): "deployments.gpt-4o",
        "{not json": "valid JSON",
        '["https://r.openai.azure.com"]': "object",
    }
    for raw, expected in cases.items():
        response = admin_client.post(
            reverse("admin:governance_providerkey_add"), key_body(provider, azure_key_config=raw)
        )
        assert response.status_code == 200, raw
        errors = response.context["adminform"].form.errors
        assert list(errors) == ["azure_key_config"], (raw, errors)
        assert expected in " ".join(errors["azure_key_config"]), (raw, errors)
    assert not ProviderKey.objects.exists()


def test_admin_key_form_refuses_a_config_on_another_types_key_and_blank_clears_it(admin_client):
    provider = provider_create(name="openai")
    url = reverse("admin:governance_providerkey_add")
    errors = admin_client.post(url, key_body(provider)).context["adminform"].form.errors
    assert "only for keys of a provider of type 'azure'" in errors["azure_key_config"][0]
    assert not ProviderKey.objects.exists()
    assert admin_client.post(url, key_body(provider, azure_key_config="")).status_code == 302
    assert ProviderKey.objects.get().azure_key_config == {}


def test_admin_key_change_replaces_the_config_and_keeps_it_when_unchanged(admin_client):
    provider = provider_create(name="azure-prod", provider_type="azure")
    admin_client.post(reverse("admin:governance_providerkey_add"), key_body(provider))
    key = ProviderKey.objects.get()
    url = reverse("admin:governance_providerkey_change", args=[key.pk])
    changed = {**AZURE_CONFIG, "api_version": "2025-01-01-preview"}
    body = key_body(provider, value="", azure_key_config=json.dumps(changed))
    assert admin_client.post(url, body).status_code == 302
    key.refresh_from_db()
    assert key.azure_key_config == changed and key.value == KEY["value"]
    response = admin_client.post(url, key_body(provider, value="", azure_key_config=""))
    assert response.status_code == 200 and "azure_key_config" in response.context["adminform"].form.errors
    key.refresh_from_db()
    assert key.azure_key_config == changed


def test_admin_provider_form_needs_a_base_url_for_ollama(admin_client):
    response = admin_client.post(
        reverse("admin:governance_provider_add"), provider_body(name="local", provider_type="ollama")
    )
    assert response.status_code == 200
    assert "base_url" in response.context["adminform"].form.errors
    assert not Provider.objects.exists()
    page = admin_client.get(reverse("admin:governance_provider_add")).content.decode()
    assert "Needs a base URL: ollama, vllm" in page


# --- the config import --------------------------------------------------------------------------

CONFIG = {
    "providers": {
        "gemini": {"keys": [{"name": "g", "value": "gemini-key-0001"}]},
        "azure": {
            "keys": [
                {
                    "name": "east",
                    "value": "env.TEST_AZURE_KEY",
                    "models": ["gpt-4o"],
                    "azure_key_config": {
                        "endpoint": "https://east.openai.azure.com",
                        "api_version": "2024-10-21",
                        "deployments": {"gpt-4o": "prod-4o"},
                    },
                }
            ]
        },
        "claude-proxy": {
            "custom_provider_config": {"base_provider_type": "anthropic"},
            "network_config": {"base_url": "http://10.0.0.7:8080"},
            "keys": [{"name": "c", "value": "claude-key-0001"}],
        },
        "eu-llm": {"provider_type": "mistral", "keys": [{"name": "m", "value": "mistral-key-0001"}]},
    }
}


def run(tmp_path, config) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = StringIO()
    call_command("import_bifrost_config", str(path), stdout=out)
    return out.getvalue()


def test_import_sets_the_types_and_the_azure_key_config(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_AZURE_KEY", "sk-azure-from-env-9999")
    run(tmp_path, CONFIG)
    types = {p.name: (p.provider_type, p.effective_base_url) for p in Provider.objects.all()}
    assert types == {
        "gemini": ("gemini", "https://generativelanguage.googleapis.com"),
        "azure": ("azure", ""),
        "claude-proxy": ("anthropic", "http://10.0.0.7:8080"),
        "eu-llm": ("mistral", "https://api.mistral.ai"),
    }
    east = ProviderKey.objects.get(name="east")
    assert east.value == "sk-azure-from-env-9999"
    assert east.azure_key_config == CONFIG["providers"]["azure"]["keys"][0]["azure_key_config"]
    run(tmp_path, CONFIG)  # idempotent
    assert Provider.objects.count() == 4 and ProviderKey.objects.count() == 4


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (
            lambda c: c["providers"].update(x={"provider_type": "ollama", "keys": []}),
            "providers.x.network_config.base_url",
        ),
        (
            lambda c: c["providers"]["azure"]["keys"][0].pop("azure_key_config"),
            "providers.azure.keys[0].azure_key_config",
        ),
        (
            lambda c: c["providers"]["azure"]["keys"][0]["azure_key_config"].update(endpoint="east"),
            "providers.azure.keys[0].azure_key_config.endpoint",
        ),
        (
            lambda c: c["providers"]["gemini"]["keys"][0].update(azure_key_config={"endpoint": "https://e.x"}),
            "providers.gemini.keys[0].azure_key_config",
        ),
        (lambda c: c["providers"]["eu-llm"].update(provider_type="soap"), "providers.eu-llm.provider_type"),
        (
            lambda c: c["providers"]["claude-proxy"]["custom_provider_config"].update(base_provider_type="soap"),
            "providers.claude-proxy.custom_provider_config.base_provider_type",
        ),
    ],
)
def test_import_refuses_a_bad_provider_naming_its_path_and_writes_nothing(tmp_path, monkeypatch, mutate, path):
    monkeypatch.setenv("TEST_AZURE_KEY", "sk-azure-from-env-9999")
    config = copy.deepcopy(CONFIG)
    mutate(config)
    with pytest.raises(CommandError) as exc:
        run(tmp_path, config)
    assert f"  {path}: " in str(exc.value)
    assert "nothing was changed" in str(exc.value)
    assert not Provider.objects.exists() and not ProviderKey.objects.exists()
