"""Claims of SECURITY.md that concern the whole site: headers, body limits, secrets in logs."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

from bifrost_site.logging import JsonFormatter
from governance.services import virtual_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def all_logs(caplog):
    caplog.set_level(logging.DEBUG)
    formatter = JsonFormatter()

    def text() -> str:
        return "\n".join(formatter.format(record) for record in caplog.records)

    return text


def test_security_headers_on_api_and_admin(alice_api, client):
    for response in (alice_api.get("/api/governance/virtual-keys"), client.get("/admin/login/")):
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Frame-Options"] == "DENY"
        assert response["Referrer-Policy"] == "same-origin"
        assert "Strict-Transport-Security" not in response


def test_hsts_and_secure_cookies_when_tls_is_on(settings, alice):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    client = Client()
    response = client.get("/admin/login/", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000"
    assert "secure" in str(response.cookies["csrftoken"]).lower()
    login = client.post(
        "/admin/login/?next=/admin/", {"username": "alice", "password": "alice-password-123"}, secure=True
    )
    assert login.status_code == 302
    session = login.cookies["sessionid"]
    assert session["httponly"] and session["secure"] and session["samesite"] == "Lax"


def test_oversized_api_body_is_413_json(alice_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = alice_api.post("/api/governance/virtual-keys", {"name": "x", "description": "y" * 4096}, format="json")
    assert response.status_code == 413
    assert response.json()["error"]["message"] == "Request body too large"


def test_vk_values_never_reach_the_logs(alice_api, all_logs):
    created = alice_api.post("/api/governance/virtual-keys", {"name": "svc"}, format="json").json()["virtual_key"]
    rotated = alice_api.post(f"/api/governance/virtual-keys/{created['id']}/rotate").json()["virtual_key"]
    _, direct = virtual_key_create(name="svc2")
    alice_api.get("/api/governance/virtual-keys/quota", HTTP_X_BF_VK=direct)
    alice_api.get("/api/governance/virtual-keys", HTTP_AUTHORIZATION=f"Bearer {direct}")
    logs = all_logs()
    for value in (created["value"], rotated["value"], direct):
        assert value not in logs


def test_an_unhandled_error_is_logged_without_the_request_body(alice_api, all_logs, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("governance.services.virtual_key_create", explode)
    response = alice_api.post("/api/governance/virtual-keys", {"name": "sk-bf-secret-in-body"}, format="json")
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "Internal server error"
    assert b"Traceback" not in response.content and b"boom" not in response.content
    assert "boom" in all_logs() and "sk-bf-secret-in-body" not in all_logs()
