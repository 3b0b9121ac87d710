"""The consent models in the Django admin: listed, searchable, secrets never shown."""

from __future__ import annotations

import pytest

from consent.models import AuthorizationCode, ConsentFlow, ConsentSession, OAuthClient
from tests.consent.conftest import REDIRECT_URI

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def submitted(flow, vk):
    flow.post("/api/oauth/per-user/consent/vk", vk=vk.value)
    flow.post("/api/oauth/per-user/consent/submit")
    return ConsentSession.objects.get()


def test_every_consent_model_has_a_changelist_without_digests(admin_client, submitted):
    flow = ConsentFlow.objects.get()
    code = AuthorizationCode.objects.get()
    secrets = [flow.browser_secret_digest, code.code_digest]
    for path in ["oauthclient", "consentflow", "consentsession", "authorizationcode"]:
        page = admin_client.get(f"/admin/consent/{path}/")
        assert page.status_code == 200, path
        for secret in secrets:
            assert secret not in page.content.decode()
    detail = admin_client.get(f"/admin/consent/consentflow/{flow.pk}/change/").content.decode()
    assert flow.client.client_name in detail
    assert flow.browser_secret_digest not in detail
    assert admin_client.get(f"/admin/consent/authorizationcode/{code.pk}/change/").status_code == 200
    assert (
        code.code_digest not in admin_client.get(f"/admin/consent/authorizationcode/{code.pk}/change/").content.decode()
    )


def test_flows_cannot_be_added_from_the_admin(admin_client):
    assert admin_client.get("/admin/consent/consentflow/add/").status_code == 403


def test_admin_refuses_a_dangerous_redirect_uri_as_a_field_error(admin_client):
    response = admin_client.post(
        "/admin/consent/oauthclient/add/",
        {"client_name": "Evil", "redirect_uris": '["javascript:alert(1)"]'},
    )
    assert response.status_code == 200
    assert "redirect_uri scheme &#x27;javascript&#x27; is not allowed" in response.content.decode()
    assert not OAuthClient.objects.filter(client_name="Evil").exists()


def test_admin_can_add_a_client(admin_client):
    response = admin_client.post(
        "/admin/consent/oauthclient/add/", {"client_name": "Zed", "redirect_uris": f'["{REDIRECT_URI}"]'}
    )
    assert response.status_code == 302
    assert OAuthClient.objects.get(client_name="Zed").redirect_uris == [REDIRECT_URI]


def test_admin_revoke_action_ends_sessions(admin_client, submitted):
    response = admin_client.post(
        "/admin/consent/consentsession/", {"action": "revoke", "_selected_action": [str(submitted.pk)]}
    )
    assert response.status_code == 302
    submitted.refresh_from_db()
    assert submitted.revoked_at is not None
