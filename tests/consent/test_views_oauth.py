"""Discovery metadata, dynamic client registration and the authorize endpoint."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from consent.http import COOKIE_PREFIX
from consent.models import ConsentFlow, OAuthClient
from consent.oauth import s256_challenge
from governance.keys import digest
from tests.consent.conftest import REDIRECT_URI, authorize_query, browser

pytestmark = pytest.mark.django_db


def message(response) -> str:
    return response.json()["error"]["message"]


def test_authorization_server_metadata_names_every_endpoint():
    response = Client().get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response.json() == {
        "issuer": "http://testserver",
        "authorization_endpoint": "http://testserver/api/oauth/per-user/authorize",
        "token_endpoint": "http://testserver/api/oauth/per-user/token",
        "registration_endpoint": "http://testserver/api/oauth/per-user/register",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
    }


def test_protected_resource_metadata_points_at_this_authorization_server():
    body = Client().get("/.well-known/oauth-protected-resource").json()
    assert body["resource"] == "http://testserver"
    assert body["authorization_servers"] == ["http://testserver"]
    assert body["bearer_methods_supported"] == ["header"]


def test_metadata_refuses_post_with_json_405():
    response = Client().post("/.well-known/oauth-authorization-server")
    assert response.status_code == 405
    assert response["Allow"] == "GET"
    assert message(response) == "Method POST not allowed; use GET"


def register(body, **extra):
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return browser().post("/api/oauth/per-user/register", raw, content_type="application/json", **extra)


def test_registration_creates_a_public_client_and_answers_201():
    response = register(
        {
            "client_name": "Cursor",
            "redirect_uris": ["cursor://anysphere.cursor-mcp/oauth", "http://127.0.0.1:5555/cb"],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        }
    )
    assert response.status_code == 201, response.content
    body = response.json()
    client = OAuthClient.objects.get(client_id=body["client_id"])
    assert client.client_name == "Cursor"
    assert body["redirect_uris"] == ["cursor://anysphere.cursor-mcp/oauth", "http://127.0.0.1:5555/cb"]
    assert body["grant_types"] == ["authorization_code"]
    assert body["response_types"] == ["code"]
    assert body["token_endpoint_auth_method"] == "none"
    assert body["client_id"].startswith("bfc_")
    assert isinstance(body["client_id_issued_at"], int)


def test_registration_needs_no_csrf_token_because_it_carries_no_cookie_authority():
    # ``browser()`` enforces CSRF; the 201 above and here shows the endpoint is exempt.
    assert register({"redirect_uris": ["https://app.example.com/cb"]}).status_code == 201


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"redirect_uris": ["javascript:alert(1)"]}, "redirect_uri scheme 'javascript' is not allowed"),
        ({"redirect_uris": ["data:text/html,hi"]}, "redirect_uri scheme 'data' is not allowed"),
        ({"redirect_uris": ["file:///etc/passwd"]}, "redirect_uri scheme 'file' is not allowed"),
        (
            {"redirect_uris": ["http://evil.example.com/cb"]},
            "redirect_uri 'http://evil.example.com/cb': plain http is only allowed on a loopback host",
        ),
        ({"redirect_uris": []}, "redirect_uris must be a non-empty list of URIs"),
        ({"client_name": "x"}, "redirect_uris is required"),
        (
            {"redirect_uris": ["https://a.example.com/cb"], "token_endpoint_auth_method": "client_secret_basic"},
            "token_endpoint_auth_method must be 'none': clients are public and use PKCE",
        ),
        (
            {"redirect_uris": ["https://a.example.com/cb"], "client_name": 5},
            "client_name must be a string of at most 255 characters",
        ),
        (
            {"redirect_uris": ["https://a.example.com/cb"], "client_name": "a\x00b"},
            "client_name must not contain control characters",
        ),
        ([1, 2], "Request body must be a JSON object"),
        ("{not json", "Request body must be valid JSON"),
    ],
)
def test_bad_registration_is_400_with_the_reason_and_creates_nothing(body, expected):
    response = register(body)
    assert response.status_code == 400
    assert message(response) == expected
    assert not OAuthClient.objects.exists()


def test_authorize_opens_a_flow_bound_to_the_browser_by_an_httponly_lax_cookie(oauth_client, pkce):
    client = browser()
    response = client.get("/api/oauth/per-user/authorize", authorize_query(oauth_client.client_id, pkce.challenge))
    assert response.status_code == 302
    flow = ConsentFlow.objects.get()
    assert response["Location"] == f"/oauth/consent?flow_id={flow.flow_id}"
    cookie = response.cookies[COOKIE_PREFIX + flow.flow_id]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert int(cookie["max-age"]) == 15 * 60
    # Only the digest of the cookie secret is stored.
    assert flow.browser_secret_digest == digest(cookie.value)
    assert cookie.value not in json.dumps(list(ConsentFlow.objects.values()), default=str)
    assert flow.state == "xyz-state"
    assert flow.redirect_uri == REDIRECT_URI
    assert flow.code_challenge == pkce.challenge
    assert abs((flow.expires_at - flow.created_at).total_seconds() - 900) < 5


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"response_type": "token"}, "response_type must be 'code'"),
        ({"response_type": None}, "response_type must be 'code'"),
        ({"client_id": ""}, "client_id and redirect_uri are required"),
        ({"redirect_uri": None}, "client_id and redirect_uri are required"),
        ({"code_challenge": None}, "PKCE is required: code_challenge and code_challenge_method=S256"),
        ({"code_challenge_method": "plain"}, "PKCE is required: code_challenge and code_challenge_method=S256"),
        ({"code_challenge_method": None}, "PKCE is required: code_challenge and code_challenge_method=S256"),
        (
            {"code_challenge": "too-short"},
            "code_challenge must be the 43-character base64url SHA-256 of the code_verifier",
        ),
        ({"client_id": "bfc_unknown"}, "Unknown client_id"),
        ({"client_id": "bfc_\x00"}, "Unknown client_id"),
        ({"redirect_uri": "http://127.0.0.1:8765/other"}, "redirect_uri not registered for this client"),
        ({"redirect_uri": REDIRECT_URI + "/"}, "redirect_uri not registered for this client"),
        ({"state": "s" * 1025}, "state must be at most 1024 characters"),
        ({"state": "bad\nstate"}, "state must contain only printable ASCII characters"),
    ],
)
def test_authorize_errors_are_400_json_and_never_redirect(oauth_client, pkce, overrides, expected):
    response = browser().get(
        "/api/oauth/per-user/authorize", authorize_query(oauth_client.client_id, pkce.challenge, **overrides)
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert message(response) == expected
    assert not ConsentFlow.objects.exists()
    assert not response.cookies


def test_authorize_accepts_a_private_use_scheme_redirect(oauth_client):
    challenge = s256_challenge("v" * 50)
    response = browser().get(
        "/api/oauth/per-user/authorize",
        authorize_query(oauth_client.client_id, challenge, redirect_uri="cursor://anysphere.cursor-mcp/oauth"),
    )
    assert response.status_code == 302
    assert ConsentFlow.objects.get().redirect_uri == "cursor://anysphere.cursor-mcp/oauth"
