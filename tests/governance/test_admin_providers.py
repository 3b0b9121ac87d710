"""Providers, provider keys (write-only values), model prices, MCP, admin API tokens."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from governance import crypto
from governance.keys import digest
from governance.models import ApiToken, McpClient, ModelPrice, Provider, ProviderKey, VirtualKeyMcpConfig
from governance.services import provider_create, provider_key_create, virtual_key_create
from tests.governance.test_admin_helpers import OWNER_INLINES, form_body

pytestmark = pytest.mark.django_db

SECRET = "sk-upstream-TOP-SECRET-value-4242"


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def provider():
    return provider_create(name="openai", base_url="http://upstream.invalid/v1")


def key_body(provider, **fields):
    return {
        "provider": str(provider.pk),
        "name": "main",
        "value": "",
        "models": "*",
        "weight": "1",
        "enabled": "on",
    } | fields


def all_pages(client, key: ProviderKey) -> str:
    urls = [
        reverse("admin:governance_providerkey_changelist"),
        reverse("admin:governance_providerkey_change", args=[key.pk]),
        reverse("admin:governance_providerkey_history", args=[key.pk]),
        reverse("admin:governance_provider_changelist"),
        reverse("admin:governance_provider_change", args=[key.provider_id]),
        reverse("admin:index"),
    ]
    return "".join(client.get(url).content.decode() for url in urls)


def test_provider_key_value_is_write_only_and_masked(admin_client, provider):
    response = admin_client.post(reverse("admin:governance_providerkey_add"), key_body(provider, value=SECRET))

    assert response.status_code == 302
    key = ProviderKey.objects.get()
    assert key.value == SECRET  # stored (encrypted), usable by the proxy
    assert SECRET not in key.value_encrypted
    html = all_pages(admin_client, key)
    assert SECRET not in html
    assert "…4242" in html
    assert not LogEntry.objects.filter(change_message__contains=SECRET).exists()
    assert not LogEntry.objects.filter(object_repr__contains=SECRET).exists()


def test_change_page_value_input_is_an_empty_password_field(admin_client, provider):
    key = provider_key_create(provider=provider, name="main", value=SECRET)
    html = admin_client.get(reverse("admin:governance_providerkey_change", args=[key.pk])).content.decode()
    assert '<input type="password" name="value"' in html
    assert SECRET not in html and 'value="sk-' not in html


def test_blank_value_on_change_keeps_the_stored_value_and_a_new_one_replaces_it(admin_client, provider):
    key = provider_key_create(provider=provider, name="main", value=SECRET)
    url = reverse("admin:governance_providerkey_change", args=[key.pk])

    assert admin_client.post(url, key_body(provider, weight="2.5")).status_code == 302
    key.refresh_from_db()
    assert (key.value, key.weight) == (SECRET, 2.5)

    assert admin_client.post(url, key_body(provider, value="sk-rotated-upstream-7777")).status_code == 302
    key.refresh_from_db()
    assert key.value == "sk-rotated-upstream-7777" and key.value_last4 == "7777"


def test_adding_a_key_without_a_value_is_a_form_error(admin_client, provider):
    response = admin_client.post(reverse("admin:governance_providerkey_add"), key_body(provider))
    assert response.status_code == 200
    assert "value" in response.context["adminform"].form.errors
    assert not ProviderKey.objects.exists()


def test_a_rejected_key_form_does_not_echo_the_value(admin_client, provider):
    response = admin_client.post(
        reverse("admin:governance_providerkey_add"), key_body(provider, value=SECRET, models="*, gpt-4o")
    )
    assert response.status_code == 200
    assert "models" in response.context["adminform"].form.errors
    assert SECRET not in response.content.decode()


def test_service_rejection_at_save_time_becomes_a_form_error(admin_client, provider):
    # The provider is read-only on change, so the form cannot check (provider, name) uniqueness;
    # the service does, and its rejection must come back as a form error with nothing written.
    provider_key_create(provider=provider, name="taken", value="sk-one-1111")
    key = provider_key_create(provider=provider, name="main", value=SECRET)

    response = admin_client.post(
        reverse("admin:governance_providerkey_change", args=[key.pk]), key_body(provider, name="taken", weight="3")
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors
    key.refresh_from_db()
    assert (key.name, key.weight) == ("main", 1.0)
    assert SECRET not in response.content.decode()


def test_provider_is_created_with_the_default_type_for_its_name(admin_client):
    body = {
        "name": "anthropic",
        "provider_type": "",
        "base_url": "http://claude.invalid",
        "timeout_seconds": "30",
        "extra_headers": "{}",
    }
    # The provider page carries its governance inline (budgets, rate limit): empty here.
    response = admin_client.post(reverse("admin:governance_provider_add"), form_body(body, OWNER_INLINES))
    assert response.status_code == 302
    assert Provider.objects.get(name="anthropic").provider_type == "anthropic"


def test_provider_with_bad_extra_headers_is_a_form_error(admin_client):
    body = {
        "name": "custom",
        "provider_type": "openai",
        "base_url": "http://x.invalid",
        "timeout_seconds": "30",
        "extra_headers": '{"X": 1}',
    }
    response = admin_client.post(reverse("admin:governance_provider_add"), form_body(body, OWNER_INLINES))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert not Provider.objects.exists()


def test_model_prices_are_editable(admin_client):
    price = ModelPrice.objects.create(
        provider="openai", model="gpt-4o", input_cost_per_token="0.0000025", output_cost_per_token="0.00001"
    )
    url = reverse("admin:governance_modelprice_change", args=[price.pk])
    body = {
        "provider": "openai",
        "model": "gpt-4o",
        "input_cost_per_token": "0.000003",
        "output_cost_per_token": "0.00001",
        "cached_input_cost_per_token": "",
    }
    assert admin_client.post(url, body).status_code == 302
    price.refresh_from_db()
    assert str(price.input_cost_per_token.normalize()) == "0.000003"
    assert "3" in admin_client.get(reverse("admin:governance_modelprice_changelist")).content.decode()


def test_vk_mcp_config_page_saves_through_the_service(admin_client):
    vk, _ = virtual_key_create(name="k")
    client_row = McpClient.objects.create(name="files")
    body = {"virtual_key": str(vk.pk), "mcp_client": str(client_row.pk), "tools_to_execute": "read, write"}
    assert admin_client.post(reverse("admin:governance_virtualkeymcpconfig_add"), body).status_code == 302
    assert VirtualKeyMcpConfig.objects.get().tools_to_execute == ["read", "write"]


def test_api_token_is_shown_once_and_only_its_digest_is_stored(admin_client, alice):
    response = admin_client.post(reverse("admin:governance_apitoken_add"), {"name": "terraform", "user": str(alice.pk)})

    one_time = reverse("admin:governance_apitoken_one_time_value")
    assert response.status_code == 302 and response["Location"] == one_time
    token = ApiToken.objects.get(name="terraform")
    html = admin_client.get(one_time).content.decode()
    values = [part.split('"')[0] for part in html.split('value="bfa_')[1:]]
    assert len(values) == 1
    value = "bfa_" + values[0]
    assert digest(value) == token.token_digest
    assert value not in admin_client.get(one_time).content.decode()
    listing = admin_client.get(reverse("admin:governance_apitoken_changelist")).content.decode()
    detail = admin_client.get(reverse("admin:governance_apitoken_change", args=[token.pk])).content.decode()
    for html in (listing, detail):
        assert token.token_digest not in html and value not in html
        assert f"…{token.token_last4}" in html

    api = admin_client.get("/api/governance/customers", HTTP_AUTHORIZATION=f"Bearer {value}")
    assert api.status_code == 200


def test_crypto_roundtrip_is_what_the_admin_relies_on():
    assert crypto.decrypt(crypto.encrypt(SECRET)) == SECRET


def test_staff_without_superuser_can_only_create_tokens_for_themselves(client, alice, django_user_model):
    from django.contrib.auth.models import Permission

    carol = django_user_model.objects.create_user("carol", "carol@example.com", "carol-password-123", is_staff=True)
    carol.user_permissions.set(Permission.objects.filter(codename__in=["add_apitoken", "view_apitoken"]))
    client.force_login(carol)

    response = client.post(reverse("admin:governance_apitoken_add"), {"name": "borrowed", "user": str(alice.pk)})

    assert response.status_code == 200
    assert "user" in response.context["adminform"].form.errors
    assert not ApiToken.objects.filter(name="borrowed").exists()
    ok = client.post(reverse("admin:governance_apitoken_add"), {"name": "mine", "user": str(carol.pk)})
    assert ok.status_code == 302
    assert ApiToken.objects.get(name="mine").user == carol
