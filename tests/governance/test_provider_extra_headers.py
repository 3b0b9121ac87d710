"""Provider ``extra_headers`` refuse framing, hop-by-hop and gateway-set names in every way in:
the provider API, the admin form and the config import (one rule, ``extra_header_problem``)."""

from __future__ import annotations

import copy

import pytest
from django.core.management import CommandError
from django.urls import reverse

from governance.models import Provider
from governance.models.providers import FRAMING_HEADERS, GATEWAY_HEADERS
from governance.services import provider_create
from tests.governance.test_admin_helpers import OWNER_INLINES, form_body
from tests.governance.test_config_import import CONFIG, env, run, snapshot  # noqa: F401 (env: autouse, sets env.*)

pytestmark = pytest.mark.django_db

REFUSED = [
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Upgrade",
    "Authorization",
    "x-api-key",
]
NETWORK = {"base_url": "http://127.0.0.1:9000"}


def test_the_refused_names_are_the_documented_ones():
    assert {name.lower() for name in REFUSED} <= FRAMING_HEADERS | GATEWAY_HEADERS
    assert GATEWAY_HEADERS == {
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "content-type",
        "accept-encoding",
    }


@pytest.mark.parametrize("name", REFUSED)
def test_provider_api_create_refuses_the_header_naming_it(alice_api, name):
    body = {"provider": "openai", "network_config": {**NETWORK, "extra_headers": {"x-team": "a", name: "v"}}}
    response = alice_api.post("/api/providers", body, format="json")
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith(f"network_config.extra_headers: header '{name}' is not allowed")
    assert response.json()["status_code"] == 400 and response.json()["is_bifrost_error"] is False
    assert not Provider.objects.exists()


def test_provider_api_update_refuses_it_and_keeps_the_stored_headers(alice_api):
    provider_create(name="openai", base_url="http://127.0.0.1:9000", extra_headers={"x-team": "a"})
    body = {"network_config": {**NETWORK, "extra_headers": {"Content-Length": "0"}}}
    response = alice_api.put("/api/providers/openai", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "network_config.extra_headers: header 'Content-Length' is not allowed: "
        "it frames the message or manages the connection"
    )
    assert Provider.objects.get().extra_headers == {"x-team": "a"}


def test_the_service_refuses_it_too_naming_the_field():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as exc:
        provider_create(name="openai", base_url="http://127.0.0.1:9000", extra_headers={"authorization": "Bearer x"})
    assert exc.value.message_dict == {
        "extra_headers": ["header 'authorization' is not allowed: the gateway sets it on every upstream call"]
    }
    assert not Provider.objects.exists()


def test_allowed_headers_still_pass(alice_api):
    headers = {"OpenAI-Organization": "org-operator", "anthropic-beta": "tools-2024", "anthropic-version": "2023-06-01"}
    body = {"provider": "openai", "network_config": {**NETWORK, "extra_headers": headers}}
    response = alice_api.post("/api/providers", body, format="json")
    assert response.status_code == 200, response.content
    assert Provider.objects.get().extra_headers == headers


@pytest.mark.parametrize("name", ["Transfer-Encoding", "Host"])
def test_admin_form_refuses_the_header_as_a_field_error(admin_client, name):
    body = {
        "name": "custom",
        "provider_type": "openai",
        "base_url": "http://x.invalid",
        "timeout_seconds": "30",
        "extra_headers": f'{{"{name}": "v"}}',
    }
    response = admin_client.post(reverse("admin:governance_provider_add"), form_body(body, OWNER_INLINES))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["extra_headers"] == [
        f"header '{name}' is not allowed: it frames the message or manages the connection"
    ]
    assert not Provider.objects.exists()


def test_admin_form_change_refuses_it_and_keeps_the_stored_headers(admin_client):
    provider = provider_create(name="custom", base_url="http://x.invalid", extra_headers={"x-team": "a"})
    body = {"provider_type": "openai", "base_url": "http://x.invalid", "timeout_seconds": "30"}
    body["extra_headers"] = '{"Upgrade": "h2c"}'
    url = reverse("admin:governance_provider_change", args=[provider.pk])
    response = admin_client.post(url, form_body(body, OWNER_INLINES))
    assert response.status_code == 200
    assert "header &#x27;Upgrade&#x27; is not allowed" in response.content.decode()
    provider.refresh_from_db()
    assert provider.extra_headers == {"x-team": "a"}


@pytest.mark.parametrize("name", ["Keep-Alive", "x-api-key"])
def test_config_import_refuses_the_header_naming_its_json_path(tmp_path, name):
    config = copy.deepcopy(CONFIG)
    config["providers"]["openai"]["network_config"]["extra_headers"] = {name: "v"}
    with pytest.raises(CommandError) as exc:
        run(tmp_path, config)
    assert f"  providers.openai.network_config.extra_headers.{name}: header '{name}' is not allowed" in str(exc.value)
    assert "nothing was changed" in str(exc.value)
    assert set(snapshot().values()) == {0}


def test_config_import_checks_a_header_value_read_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_HEADER_VALUE", "a\r\nInjected: 1")
    config = copy.deepcopy(CONFIG)
    config["providers"]["openai"]["network_config"]["extra_headers"] = {"x-org": "env.TEST_HEADER_VALUE"}
    with pytest.raises(CommandError) as exc:
        run(tmp_path, config)
    assert "providers.openai.network_config.extra_headers.x-org: invalid value for header 'x-org'" in str(exc.value)
    assert set(snapshot().values()) == {0}
