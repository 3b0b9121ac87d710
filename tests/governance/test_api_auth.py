from __future__ import annotations

import base64

import pytest

from governance.models import VirtualKey
from governance.services import virtual_key_create

pytestmark = pytest.mark.django_db
URL = "/api/governance/virtual-keys"


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_anonymous_gets_401_json(anon_api):
    response = anon_api.get(URL)
    assert response.status_code == 401
    assert response.json()["status_code"] == 401
    assert "WWW-Authenticate" in response


def test_unknown_bearer_token_is_401(anon_api):
    anon_api.credentials(HTTP_AUTHORIZATION="Bearer bfa_nope")
    assert anon_api.get(URL).status_code == 401


def test_a_virtual_key_is_not_a_management_credential(anon_api):
    _, value = virtual_key_create(name="svc")
    anon_api.credentials(HTTP_AUTHORIZATION=f"Bearer {value}")
    response = anon_api.get(URL)
    assert response.status_code == 401
    assert value not in response.content.decode()


def test_staff_basic_auth_works_and_non_staff_is_refused(anon_api, alice, django_user_model):
    anon_api.credentials(HTTP_AUTHORIZATION=basic("alice", "alice-password-123"))
    assert anon_api.get(URL).status_code == 200
    django_user_model.objects.create_user("eve", password="eve-password-123")
    anon_api.credentials(HTTP_AUTHORIZATION=basic("eve", "eve-password-123"))
    assert anon_api.get(URL).status_code == 401


def test_view_only_staff_can_read_but_not_write(bob_api):
    vk, _ = virtual_key_create(name="svc")
    assert bob_api.get(URL).status_code == 200
    assert bob_api.get(f"{URL}/{vk.pk}").status_code == 200
    assert bob_api.post(URL, {"name": "x"}, format="json").status_code == 403
    assert bob_api.put(f"{URL}/{vk.pk}", {"name": "y"}, format="json").status_code == 403
    assert bob_api.post(f"{URL}/{vk.pk}/rotate").status_code == 403
    assert bob_api.delete(f"{URL}/{vk.pk}").status_code == 403
    assert VirtualKey.objects.get().name == "svc"


def test_session_auth_needs_csrf_for_writes(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get(URL).status_code == 200
    response = client.post(URL, {"name": "x"}, content_type="application/json")
    assert response.status_code == 403
    assert not VirtualKey.objects.exists()


def test_schema_is_served_and_lists_every_resource(alice_api):
    response = alice_api.get("/api/governance/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path in (
        "/api/governance/virtual-keys",
        "/api/governance/virtual-keys/{id}/rotate",
        "/api/governance/teams",
        "/api/governance/customers",
        "/api/governance/budgets",
        "/api/governance/rate-limits",
    ):
        assert path in schema["paths"], path


def test_schema_needs_authentication(anon_api):
    assert anon_api.get("/api/governance/schema").status_code == 401
