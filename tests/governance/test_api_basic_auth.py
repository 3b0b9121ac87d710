"""HTTP Basic on ``/api/*``: a verified credential is remembered briefly; failures are limited."""

from __future__ import annotations

import base64
from unittest import mock

import pytest
from django.contrib.auth import base_user
from django.core.cache import caches
from redis.exceptions import ConnectionError as RedisConnectionError
from rest_framework.test import APIClient

from governance.api import authentication
from governance.models import Customer

pytestmark = pytest.mark.django_db
URL = "/api/governance/customers"


@pytest.fixture(autouse=True)
def _fresh_state():
    """The remembered credentials are per process and the failure counters live in the default
    cache: neither may carry over from another test."""
    authentication.forget_verified_credentials()
    caches["default"].clear()
    yield
    authentication.forget_verified_credentials()
    caches["default"].clear()


@pytest.fixture
def hashes():
    """Counts password hash checks (the cost the cache saves)."""
    with mock.patch.object(base_user, "check_password", wraps=base_user.check_password) as spy:
        yield spy


def basic_client(username: str, password: str, address: str = "10.1.1.1") -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {token}")
    return client


def test_a_verified_credential_is_hashed_once_within_the_ttl(alice, hashes):
    client = basic_client("alice", "alice-password-123")
    for _ in range(3):
        assert client.get(URL).status_code == 200
    assert hashes.call_count == 1


def test_the_password_is_hashed_again_after_the_ttl(alice, hashes, monkeypatch, settings):
    settings.API_BASIC_AUTH_CACHE_SECONDS = 5
    client = basic_client("alice", "alice-password-123")
    assert client.get(URL).status_code == 200
    clock = authentication._now()
    monkeypatch.setattr(authentication, "_now", lambda: clock + 6)
    assert client.get(URL).status_code == 200
    assert hashes.call_count == 2


def test_a_zero_ttl_remembers_nothing(alice, hashes, settings):
    settings.API_BASIC_AUTH_CACHE_SECONDS = 0
    client = basic_client("alice", "alice-password-123")
    assert client.get(URL).status_code == 200
    assert client.get(URL).status_code == 200
    assert hashes.call_count == 2 and not authentication._verified


def test_the_cache_holds_a_digest_and_the_hash_never_the_password(alice):
    assert basic_client("alice", "alice-password-123").get(URL).status_code == 200
    assert "alice-password-123" not in repr(authentication._verified)
    [(digest, (user_id, password_hash, _))] = authentication._verified.items()
    assert len(digest) == 64 and user_id == alice.pk and password_hash == alice.password


def test_a_password_change_invalidates_the_remembered_credential_at_once(alice):
    old = basic_client("alice", "alice-password-123")
    assert old.get(URL).status_code == 200
    alice.set_password("a-new-password-456")
    alice.save()
    response = old.post(URL, {"name": "Acme"}, format="json")
    assert response.status_code == 401 and response.json()["status_code"] == 401
    assert not Customer.objects.exists()
    assert basic_client("alice", "a-new-password-456").post(URL, {"name": "Acme"}, format="json").status_code == 200
    assert Customer.objects.get().name == "Acme"


@pytest.mark.parametrize("change", [{"is_active": False}, {"is_staff": False}])
def test_deactivation_or_losing_staff_takes_effect_at_once(alice, change):
    client = basic_client("alice", "alice-password-123")
    assert client.get(URL).status_code == 200
    type(alice).objects.filter(pk=alice.pk).update(**change)
    response = client.post(URL, {"name": "Acme"}, format="json")
    assert response.status_code == 401
    assert not Customer.objects.exists()


def test_failed_attempts_per_username_are_limited_even_for_the_right_password(alice, settings, hashes):
    settings.API_BASIC_AUTH_FAILURES_PER_USER = "3/m"
    for index in range(3):
        response = basic_client("alice", "wrong", address=f"10.2.0.{index}").get(URL)
        assert response.status_code == 401
    hashes.reset_mock()
    response = basic_client("alice", "alice-password-123", address="10.2.0.9").post(URL, {"name": "X"}, format="json")
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    body = response.json()
    assert body == {
        "is_bifrost_error": False,
        "status_code": 429,
        "error": {"message": body["error"]["message"]},
        "extra_fields": {},
    }
    assert body["error"]["message"].startswith("Too many failed sign-in attempts.")
    assert hashes.call_count == 0  # refused before any password hashing
    assert not Customer.objects.exists()
    # Another user from the same addresses is not affected.
    bob_client = basic_client("bob", "bob-password-123", address="10.2.0.9")
    type(alice).objects.create_user("bob", password="bob-password-123", is_staff=True, is_superuser=True)
    assert bob_client.get(URL).status_code == 200


def test_failed_attempts_per_address_are_limited(alice, settings):
    settings.API_BASIC_AUTH_FAILURES_PER_IP = "3/m"
    for name in ("x", "y", "z"):
        assert basic_client(name, "guess", address="10.3.0.1").get(URL).status_code == 401
    response = basic_client("alice", "alice-password-123", address="10.3.0.1").get(URL)
    assert response.status_code == 429 and "Retry-After" in response
    assert response.json()["status_code"] == 429
    assert basic_client("alice", "alice-password-123", address="10.3.0.2").get(URL).status_code == 200


def test_ipv6_addresses_of_one_64_share_a_limit(alice, settings):
    settings.API_BASIC_AUTH_FAILURES_PER_IP = "2/m"
    for address in ("2001:db8::1", "2001:db8::2"):
        assert basic_client("nobody", "guess", address=address).get(URL).status_code == 401
    assert basic_client("alice", "alice-password-123", address="2001:db8::3").get(URL).status_code == 429
    assert basic_client("alice", "alice-password-123", address="2001:db8:0:1::3").get(URL).status_code == 200


def test_a_request_without_a_client_address_is_limited_not_a_500(alice, settings):
    settings.API_BASIC_AUTH_FAILURES_PER_IP = "1/m"
    response = basic_client("nobody", "guess", address="").get(URL)
    assert response.status_code == 401 and response.json()["status_code"] == 401
    response = basic_client("alice", "alice-password-123", address="").get(URL)
    assert response.status_code == 429 and response.json()["status_code"] == 429


def test_a_remembered_credential_still_works_during_a_lock_out(alice, settings):
    settings.API_BASIC_AUTH_FAILURES_PER_USER = "2/m"
    owner = basic_client("alice", "alice-password-123")
    assert owner.get(URL).status_code == 200
    for _ in range(2):
        assert basic_client("alice", "wrong", address="10.4.0.1").get(URL).status_code == 401
    assert basic_client("alice", "wrong", address="10.4.0.1").get(URL).status_code == 429
    assert owner.post(URL, {"name": "Acme"}, format="json").status_code == 200
    assert Customer.objects.get().name == "Acme"


def test_unreachable_limiter_cache_fails_closed_with_503(alice):
    with mock.patch.object(authentication, "get_usage", side_effect=RedisConnectionError("down")):
        response = basic_client("alice", "alice-password-123").post(URL, {"name": "Acme"}, format="json")
    assert response.status_code == 503
    assert response.json()["status_code"] == 503 and "API token" in response.json()["error"]["message"]
    assert not Customer.objects.exists()
