"""Fixtures for the consent flow: a registered MCP client, a PKCE pair, browsers, a clock.

A "browser" is a Django test client with CSRF checks on, so every form POST must carry the
token from the page, exactly as a real browser does.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.cache import caches
from django.test import Client
from django.utils import timezone

from consent.oauth import s256_challenge
from consent.services import oauth_client_register
from governance.models import McpClient
from governance.services import virtual_key_create

REDIRECT_URI = "http://127.0.0.1:8765/callback"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """django-ratelimit counts in the default cache; clear it so tests do not share attempts."""
    caches["default"].clear()
    yield
    caches["default"].clear()


@dataclass
class Pkce:
    verifier: str
    challenge: str


@pytest.fixture
def pkce() -> Pkce:
    verifier = secrets.token_urlsafe(48)
    return Pkce(verifier=verifier, challenge=s256_challenge(verifier))


@pytest.fixture
def oauth_client(db):
    return oauth_client_register(
        redirect_uris=[REDIRECT_URI, "cursor://anysphere.cursor-mcp/oauth"], client_name="Cursor"
    )


@pytest.fixture
def mcp_clients(db) -> dict[str, McpClient]:
    """One open per-user client, one granted by a key, one not per-user, one never granted."""
    return {
        "open": McpClient.objects.create(name="docs-search", per_user_oauth=True, allow_on_all_virtual_keys=True),
        "granted": McpClient.objects.create(name="github", per_user_oauth=True),
        "shared": McpClient.objects.create(name="shared-server", per_user_oauth=False, allow_on_all_virtual_keys=True),
        "other": McpClient.objects.create(name="jira", per_user_oauth=True),
    }


@pytest.fixture
def vk(mcp_clients):
    """An active key granted the ``github`` MCP client; ``vk.value`` is its secret."""
    key, value = virtual_key_create(
        name="alice-key", mcp_configs=[{"mcp_client_name": "github", "tools_to_execute": ["create_issue", "search"]}]
    )
    key.value = value
    return key


def browser() -> Client:
    return Client(enforce_csrf_checks=True)


def authorize_query(registered_client_id: str, challenge: str, **overrides: str) -> dict[str, str]:
    query = {
        "response_type": "code",
        "client_id": registered_client_id,
        "redirect_uri": REDIRECT_URI,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "xyz-state",
    }
    query.update(overrides)
    return {k: v for k, v in query.items() if v is not None}


def start_flow(client: Client, oauth_client, pkce: Pkce, **overrides: str) -> str:
    """Run ``authorize`` in this browser; returns the new flow id."""
    response = client.get(
        "/api/oauth/per-user/authorize", authorize_query(oauth_client.client_id, pkce.challenge, **overrides)
    )
    assert response.status_code == 302, response.content
    return parse_qs(urlsplit(response["Location"]).query)["flow_id"][0]


def csrf_token(client: Client, flow_id: str) -> str:
    """Load the identity page (as a browser does before posting) and return its form token."""
    page = client.get("/oauth/consent", {"flow_id": flow_id})
    assert page.status_code == 200, page.content
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
    assert match
    return match.group(1).decode()


@dataclass
class Flow:
    browser: Client
    flow_id: str
    token: str

    def post(self, path: str, **fields: str):
        """POST a consent form with this browser's CSRF token (fields may override ``flow_id``)."""
        data = {"flow_id": self.flow_id, "csrfmiddlewaretoken": self.token, **fields}
        return self.browser.post(path, data)


@pytest.fixture
def flow(oauth_client, pkce) -> Flow:
    client = browser()
    flow_id = start_flow(client, oauth_client, pkce)
    return Flow(browser=client, flow_id=flow_id, token=csrf_token(client, flow_id))


@pytest.fixture
def other_browser(oauth_client, pkce) -> Flow:
    """A second browser with a valid CSRF token (from its own flow), i.e. a would-be attacker."""
    client = browser()
    flow_id = start_flow(client, oauth_client, pkce)
    return Flow(browser=client, flow_id=flow_id, token=csrf_token(client, flow_id))


@pytest.fixture
def clock(monkeypatch):
    """A controllable clock: ``clock.advance(seconds=...)`` moves Django's idea of now."""

    class Clock:
        def __init__(self) -> None:
            self.offset = timedelta()

        def advance(self, **delta: float) -> None:
            self.offset += timedelta(**delta)

    real_now = timezone.now
    fake = Clock()
    monkeypatch.setattr(timezone, "now", lambda: real_now() + fake.offset)
    return fake
