"""Per-user OAuth to upstream MCP servers (``mcp_gateway.user_oauth``), end to end in-process: the
gateway's pages through Django's test client, the upstream (``tests/mcp/servers/oauth_server.py``,
an MCP server requiring Bearer tokens with its own authorization server) as a subprocess.

Connecting from the MCPs page and from a connect link, the calls carrying the user's own token,
refresh, the link's signature, expiry and single use, state reuse, revocation (admin, VK deletion,
consent session revocation) and secrets kept out of responses, logs and the database.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from consent.models import ConsentSession, Identity
from consent.oauth import s256_challenge
from consent.services import consent_sessions_revoke, oauth_client_register
from governance import crypto
from governance.keys import digest
from governance.models import (
    McpClient,
    McpConnectLinkUse,
    McpOAuthRegistration,
    McpUpstreamOAuthFlow,
    McpUserToken,
)
from governance.services import virtual_key_create
from governance.services.virtual_keys import virtual_key_delete
from mcp_gateway import user_oauth
from tests.mcp.conftest import ServerProcess

CALLBACK = "http://testserver/api/oauth/callback"
APP_REDIRECT = "http://127.0.0.1:9/cb"
PREREGISTERED = ("gw-app", "preregistered-client-secret-4711")


class OAuthUpstream(ServerProcess):
    """``tests/mcp/servers/oauth_server.py`` in a subprocess, with its test controls."""

    module = "tests.mcp.servers.oauth_server"
    label = "OAuth test server"

    def __init__(self, *args: str) -> None:
        super().__init__(*args)
        self.url = f"{self.base}/mcp"

    def login(self, user: str) -> None:
        httpx2.post(f"{self.base}/_test/login", params={"user": user}).raise_for_status()

    def revoke(self, user: str) -> None:
        httpx2.post(f"{self.base}/_test/revoke", params={"user": user}).raise_for_status()

    def stats(self) -> dict[str, int]:
        answer: dict[str, int] = httpx2.get(f"{self.base}/_test/stats").json()
        return answer


def _server(*args: str) -> Iterator[OAuthUpstream]:
    server = OAuthUpstream(*args)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def oauth_upstream() -> Iterator[OAuthUpstream]:
    client_id, secret = PREREGISTERED
    yield from _server("--client-id", client_id, "--client-secret", secret, "--redirect-uri", CALLBACK)


@pytest.fixture
def short_ttl_upstream() -> Iterator[OAuthUpstream]:
    yield from _server("--token-ttl", "2")


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def gh(make_mcp_client, oauth_upstream) -> McpClient:
    """A per-user OAuth client discovered and dynamically registered (no oauth_config)."""
    return make_mcp_client(
        name="gh",
        connection_type="http",
        connection_string=oauth_upstream.url,
        auth_type="per_user_oauth",
        tools_to_execute=["*"],
        allow_on_all_virtual_keys=True,
    )


# --- helpers -------------------------------------------------------------------------------------


def start_consent(browser: Client) -> tuple[str, str, str]:
    """An MCP app registers and opens the consent flow: ``(flow id, app client id, verifier)``."""
    app = browser.post(
        "/api/oauth/per-user/register",
        json.dumps({"client_name": "Claude", "redirect_uris": [APP_REDIRECT]}),
        content_type="application/json",
    ).json()
    verifier = "v" * 64
    answer = browser.get(
        "/api/oauth/per-user/authorize",
        {
            "response_type": "code",
            "client_id": app["client_id"],
            "redirect_uri": APP_REDIRECT,
            "code_challenge": s256_challenge(verifier),
            "code_challenge_method": "S256",
            "state": "app-state",
        },
    )
    flow_id = parse_qs(urlsplit(answer["Location"]).query)["flow_id"][0]
    return flow_id, app["client_id"], verifier


def choose_user(browser: Client, flow_id: str, user_id: str) -> None:
    answer = browser.post("/api/oauth/per-user/consent/user-id", {"flow_id": flow_id, "user_id": user_id})
    assert answer.status_code == 302, answer.content


def choose_vk(browser: Client, flow_id: str, value: str) -> None:
    answer = browser.post("/api/oauth/per-user/consent/vk", {"flow_id": flow_id, "vk": value})
    assert answer.status_code == 302 and "mcps" in answer["Location"], answer.content


def finish_consent(browser: Client, flow_id: str, app_client_id: str, verifier: str) -> str:
    """Finish Setup and the app's token exchange: the consent session's access token."""
    answer = browser.post("/api/oauth/per-user/consent/submit", {"flow_id": flow_id})
    code = parse_qs(urlsplit(answer["Location"]).query)["code"][0]
    token = browser.post(
        "/api/oauth/per-user/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": app_client_id,
            "redirect_uri": APP_REDIRECT,
        },
    )
    return str(token.json()["access_token"])


def upstream_approves(location: str) -> str:
    """The browser at the upstream's /authorize (auto-approved): the gateway callback path + query."""
    answer = httpx2.get(location, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
    return f"{back.path}?{back.query}"


def connect_from_mcps_page(browser: Client, flow_id: str, mcp: McpClient) -> Any:
    start = browser.get(reverse("mcp-oauth-authorize"), {"mcp_client_id": mcp.client_id, "flow_id": flow_id})
    assert start.status_code == 302, start.content
    return browser.get(upstream_approves(start["Location"]))


def session_token(*, vk: Any = None, user_id: str = "") -> tuple[str, ConsentSession]:
    """A live consent session for a VK or a user id, made directly: its access token."""
    token = f"tok-{digest(str(time.monotonic_ns()))[:20]}"
    app = oauth_client_register(redirect_uris=[APP_REDIRECT], client_name="Claude")
    session = ConsentSession.objects.create(
        client=app,
        identity=Identity.VIRTUAL_KEY if vk else Identity.USER_ID,
        virtual_key=vk,
        virtual_key_digest=vk.value_digest if vk else "",
        user_id=user_id,
        access_token_digest=digest(token),
        expires_at=timezone.now() + timezone.timedelta(hours=1),
    )
    return token, session


def rpc(browser: Client, method: str, params: dict | None = None, **headers: str) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    answer = browser.post("/mcp", json.dumps(message), content_type="application/json", headers=headers)
    assert answer.status_code == 200, answer.content
    return dict(answer.json())


def call(browser: Client, tool: str, arguments: dict | None = None, **headers: str) -> dict[str, Any]:
    result: dict[str, Any] = rpc(browser, "tools/call", {"name": tool, "arguments": arguments or {}}, **headers)[
        "result"
    ]
    return result


def text_of(result: dict[str, Any]) -> str:
    return "\n".join(block.get("text", "") for block in result["content"])


def link_in(result: dict[str, Any]) -> str:
    text = text_of(result)
    start = text.index("http://testserver/api/oauth/per-user/upstream/connect?token=")
    return text[start:].split()[0]


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def tool_names(browser: Client, **headers: str) -> list[str]:
    return sorted(t["name"] for t in rpc(browser, "tools/list", **headers)["result"]["tools"])


# --- connecting from the MCPs page ------------------------------------------------------------------


def test_a_user_id_connects_from_the_mcps_page_and_calls_with_its_own_token(gh, oauth_upstream, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False  # a user-id session may use /mcp
    oauth_upstream.login("alice-at-upstream")
    registrations = oauth_upstream.stats().get("registrations", 0)
    browser = Client()
    flow_id, app_id, verifier = start_consent(browser)
    choose_user(browser, flow_id, "alice")
    page = browser.get(reverse("consent:mcps"), {"flow_id": flow_id}).content.decode()
    assert ">Connect</a>" in page and "Connected" not in page and f"mcp_client_id={gh.client_id}" in page

    back = connect_from_mcps_page(browser, flow_id, gh)
    assert back.status_code == 302 and back["Location"] == f"/oauth/consent/mcps?flow_id={flow_id}"
    page = browser.get(back["Location"]).content.decode()
    assert "Connected" in page and ">Connect</a>" not in page

    row = McpUserToken.objects.get()
    assert (row.mcp_client, row.user_id, row.virtual_key) == (gh, "alice", None)
    assert row.refresh_token and row.expires_at is not None
    assert row.access_token not in row.access_token_encrypted
    assert oauth_upstream.stats()["registrations"] == registrations + 1  # RFC 7591, once
    registration = McpOAuthRegistration.objects.get(mcp_client=gh)
    assert registration.redirect_uri == CALLBACK and registration.client_secret

    token = finish_consent(browser, flow_id, app_id, verifier)
    bearer = {"authorization": f"Bearer {token}"}
    assert tool_names(browser, **bearer) == ["gh_echo", "gh_whoami"]
    result = call(browser, "gh_whoami", **bearer)
    assert result["isError"] is False and text_of(result) == "alice-at-upstream"

    # A second connect reuses the registration and replaces the token.
    flow_id2, _, _ = start_consent(browser)
    choose_user(browser, flow_id2, "alice")
    assert connect_from_mcps_page(browser, flow_id2, gh).status_code == 302
    assert McpUserToken.objects.count() == 1 and McpOAuthRegistration.objects.count() == 1
    assert oauth_upstream.stats()["registrations"] == registrations + 1


def test_a_vk_identity_connects_and_its_key_calls_as_its_own_upstream_user(gh, oauth_upstream):
    vk, value = virtual_key_create(name="bob-key")
    other, other_value = virtual_key_create(name="carol-key")
    oauth_upstream.login("bob-at-upstream")
    browser = Client()
    flow_id, _, _ = start_consent(browser)
    choose_vk(browser, flow_id, value)
    assert connect_from_mcps_page(browser, flow_id, gh).status_code == 302
    assert McpUserToken.objects.get().virtual_key == vk

    result = call(Client(), "gh_whoami", x_bf_vk=value)
    assert text_of(result) == "bob-at-upstream"
    # Another key holds no token: it gets a connect link, never bob's account.
    result = call(Client(), "gh_whoami", x_bf_vk=other_value)
    assert result["isError"] is True and "connect" in text_of(result)


def test_the_mcps_page_refuses_another_browser_an_unknown_flow_and_a_client_not_allowed(
    gh, make_mcp_client, oauth_upstream
):
    vk, value = virtual_key_create(name="dave-key")
    private = make_mcp_client(
        name="private", connection_type="http", connection_string=oauth_upstream.url, auth_type="per_user_oauth"
    )
    browser = Client()
    flow_id, _, _ = start_consent(browser)
    url = reverse("mcp-oauth-authorize")
    assert browser.get(url, {"mcp_client_id": gh.client_id, "flow_id": flow_id}).status_code == 400  # no identity
    choose_vk(browser, flow_id, value)
    stranger = Client().get(url, {"mcp_client_id": gh.client_id, "flow_id": flow_id})
    assert stranger.status_code == 403
    assert browser.get(url, {"mcp_client_id": gh.client_id, "flow_id": "nope"}).status_code == 400
    refused = browser.get(
        url, {"mcp_client_id": private.client_id, "flow_id": flow_id}, headers={"accept": "text/html"}
    )
    assert refused.status_code == 400 and b"not one this identity can connect" in refused.content
    assert McpUpstreamOAuthFlow.objects.count() == 0


# --- the callback ----------------------------------------------------------------------------------


def test_state_reuse_unknown_state_another_browser_and_a_refused_code_store_nothing(gh, oauth_upstream):
    browser = Client()
    flow_id, _, _ = start_consent(browser)
    choose_user(browser, flow_id, "erin")
    start = browser.get(reverse("mcp-oauth-authorize"), {"mcp_client_id": gh.client_id, "flow_id": flow_id})
    back = upstream_approves(start["Location"])

    assert Client().get(back).status_code == 403  # not the browser that started it
    assert browser.get(back).status_code == 302
    again = browser.get(back)
    assert again.status_code == 400 and "already completed" in again.json()["error"]["message"]
    assert browser.get("/api/oauth/callback?code=x&state=unknown").status_code == 400
    assert browser.get("/api/oauth/callback?code=x").status_code == 400
    McpUserToken.objects.all().delete()

    # A code the upstream does not know: its token error is the answer, nothing is stored.
    start = browser.get(reverse("mcp-oauth-authorize"), {"mcp_client_id": gh.client_id, "flow_id": flow_id})
    state = parse_qs(urlsplit(start["Location"]).query)["state"][0]
    refused = browser.get("/api/oauth/callback", {"code": "forged", "state": state}, headers={"accept": "text/html"})
    assert refused.status_code == 400 and b"did not issue a token" in refused.content
    assert b"invalid_grant" in refused.content and McpUserToken.objects.count() == 0

    # An authorization older than 10 minutes.
    start = browser.get(reverse("mcp-oauth-authorize"), {"mcp_client_id": gh.client_id, "flow_id": flow_id})
    back = upstream_approves(start["Location"])
    McpUpstreamOAuthFlow.objects.update(expires_at=timezone.now() - timezone.timedelta(seconds=1))
    expired = browser.get(back)
    assert expired.status_code == 400 and "expired" in expired.json()["error"]["message"]
    # The upstream said no.
    start = browser.get(reverse("mcp-oauth-authorize"), {"mcp_client_id": gh.client_id, "flow_id": flow_id})
    state = parse_qs(urlsplit(start["Location"]).query)["state"][0]
    denied = browser.get("/api/oauth/callback", {"error": "access_denied", "state": state})
    assert denied.status_code == 400 and "access_denied" in denied.json()["error"]["message"]
    assert McpUserToken.objects.count() == 0


# --- tools/call without a token: the connect link ---------------------------------------------------


def test_no_token_is_an_error_with_a_signed_link_that_connects_once(gh, oauth_upstream):
    vk, value = virtual_key_create(name="frank-key")
    oauth_upstream.login("frank-at-upstream")
    result = call(Client(), "gh_whoami", x_bf_vk=value)
    assert result["isError"] is True and "open this link" in text_of(result)
    link = link_in(result)
    signed = parse_qs(urlsplit(link).query)["token"][0]
    assert str(vk.pk) not in link and signed.count(":") == 2  # the id only inside a signed payload

    browser = Client()
    start = browser.get(path_of(link))
    assert start.status_code == 302 and start["Location"].startswith(f"{oauth_upstream.base}/authorize?")
    done = browser.get(upstream_approves(start["Location"]))
    assert done.status_code == 200 and b"Connected" in done.content and b"return to your client" in done.content
    assert McpUserToken.objects.get().virtual_key == vk
    assert text_of(call(Client(), "gh_whoami", x_bf_vk=value)) == "frank-at-upstream"

    second = Client().get(path_of(link))
    assert second.status_code == 400 and "already used" in second.json()["error"]["message"]


def test_a_tampered_forged_or_expired_link_is_refused(gh, oauth_upstream, monkeypatch):
    _, value = virtual_key_create(name="gina-key")
    link = link_in(call(Client(), "gh_whoami", x_bf_vk=value))
    signed = parse_qs(urlsplit(link).query)["token"][0]
    tampered = signed[:-2] + ("AA" if not signed.endswith("AA") else "BB")
    url = reverse("mcp-oauth-connect")
    answer = Client().get(url, {"token": tampered})
    assert answer.status_code == 400 and "invalid" in answer.json()["error"]["message"]
    from django.core import signing

    forged = signing.dumps({"c": gh.client_id, "v": "x", "n": "n"}, salt="another-salt")
    assert Client().get(url, {"token": forged}).status_code == 400
    assert Client().get(url).status_code == 400
    monkeypatch.setattr(user_oauth, "LINK_MAX_AGE_SECONDS", -1)
    expired = Client().get(path_of(link))
    assert expired.status_code == 400 and "expired" in expired.json()["error"]["message"]
    assert McpConnectLinkUse.objects.count() == 0 and McpUpstreamOAuthFlow.objects.count() == 0


def test_a_link_is_bound_to_its_session_and_identity(gh, oauth_upstream, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False
    henry, _ = session_token(user_id="henry")
    ivy, ivy_session = session_token(user_id="ivy")
    henry_link = link_in(call(Client(), "gh_whoami", authorization=f"Bearer {henry}"))
    ivy_link = link_in(call(Client(), "gh_whoami", authorization=f"Bearer {ivy}"))

    # Ivy's session is revoked: her link no longer connects anyone.
    consent_sessions_revoke(session_ids=[ivy_session.pk])
    refused = Client().get(path_of(ivy_link))
    assert refused.status_code == 400 and "can no longer connect" in refused.json()["error"]["message"]

    oauth_upstream.login("henry-at-upstream")
    browser = Client()
    assert browser.get(upstream_approves(browser.get(path_of(henry_link))["Location"])).status_code == 200
    assert list(McpUserToken.objects.values_list("user_id", flat=True)) == ["henry"]
    assert text_of(call(Client(), "gh_whoami", authorization=f"Bearer {henry}")) == "henry-at-upstream"
    ivy2, _ = session_token(user_id="ivy")
    assert call(Client(), "gh_whoami", authorization=f"Bearer {ivy2}")["isError"] is True


def test_an_anonymous_caller_gets_no_link(gh, oauth_upstream, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False
    result = call(Client(), "gh_whoami")
    assert result["isError"] is True and "/connect?" not in text_of(result) and "consent flow" in text_of(result)


# --- tools/list ---------------------------------------------------------------------------------------


def test_tools_list_uses_the_callers_token_else_the_last_listing_of_anyone(gh, oauth_upstream):
    _, first = virtual_key_create(name="jack-key")
    _, second = virtual_key_create(name="kate-key")
    assert tool_names(Client(), x_bf_vk=first) == []  # nobody has listed this client yet
    link = link_in(call(Client(), "gh_echo", {"text": "hi"}, x_bf_vk=first))
    browser = Client()
    browser.get(upstream_approves(browser.get(path_of(link))["Location"]))
    assert tool_names(Client(), x_bf_vk=first) == ["gh_echo", "gh_whoami"]
    assert tool_names(Client(), x_bf_vk=second) == ["gh_echo", "gh_whoami"]  # the cached listing
    result = call(Client(), "gh_echo", {"text": "hi"}, x_bf_vk=second)
    assert result["isError"] is True and "open this link" in text_of(result)
    assert "error" in rpc(Client(), "tools/call", {"name": "gh_nope", "arguments": {}}, x_bf_vk=second)


def test_a_token_the_upstream_revoked_is_dropped_and_the_caller_gets_a_link(gh, oauth_upstream):
    _, value = virtual_key_create(name="liam-key")
    oauth_upstream.login("liam-at-upstream")
    link = link_in(call(Client(), "gh_whoami", x_bf_vk=value))
    browser = Client()
    browser.get(upstream_approves(browser.get(path_of(link))["Location"]))
    assert text_of(call(Client(), "gh_whoami", x_bf_vk=value)) == "liam-at-upstream"
    oauth_upstream.revoke("liam-at-upstream")
    cache.clear()  # the listing made with the token is cached for a minute
    result = call(Client(), "gh_whoami", x_bf_vk=value)
    assert result["isError"] is True and "open this link" in text_of(result)
    assert McpUserToken.objects.count() == 0


# --- refresh ----------------------------------------------------------------------------------------


def test_an_expired_token_is_refreshed_and_a_refused_refresh_asks_to_connect(
    make_mcp_client, short_ttl_upstream, monkeypatch
):
    monkeypatch.setattr(user_oauth, "EXPIRY_MARGIN_SECONDS", 0.0)
    make_mcp_client(
        name="notion",
        connection_type="http",
        connection_string=short_ttl_upstream.url,
        auth_type="per_user_oauth",
        tools_to_execute=["*"],
        allow_on_all_virtual_keys=True,
    )
    _, value = virtual_key_create(name="mia-key")
    short_ttl_upstream.login("mia-at-upstream")
    link = link_in(call(Client(), "notion_whoami", x_bf_vk=value))
    browser = Client()
    browser.get(upstream_approves(browser.get(path_of(link))["Location"]))
    assert text_of(call(Client(), "notion_whoami", x_bf_vk=value)) == "mia-at-upstream"
    before = McpUserToken.objects.get()
    assert short_ttl_upstream.stats().get("refreshes", 0) == 0

    time.sleep(2.2)  # the access token has expired, at the upstream too
    cache.clear()
    assert text_of(call(Client(), "notion_whoami", x_bf_vk=value)) == "mia-at-upstream"
    after = McpUserToken.objects.get()
    assert short_ttl_upstream.stats()["refreshes"] == 1
    assert after.access_token != before.access_token and after.refresh_token != before.refresh_token
    assert after.expires_at is not None and before.expires_at is not None and after.expires_at > before.expires_at

    # The upstream forgets the user: the refresh is refused, the token goes, a link comes back.
    short_ttl_upstream.revoke("mia-at-upstream")
    McpUserToken.objects.update(expires_at=timezone.now() - timezone.timedelta(seconds=1))
    result = call(Client(), "notion_whoami", x_bf_vk=value)
    assert result["isError"] is True and "open this link" in text_of(result)
    assert McpUserToken.objects.count() == 0


# --- configured endpoints and a client secret -----------------------------------------------------


def test_configured_endpoints_with_a_client_secret_from_the_environment(make_mcp_client, oauth_upstream, monkeypatch):
    client_id, secret = PREREGISTERED
    monkeypatch.setenv("GH_APP_SECRET", secret)
    client = make_mcp_client(
        name="ghapp",
        connection_type="http",
        connection_string=oauth_upstream.url,
        auth_type="per_user_oauth",
        tools_to_execute=["*"],
        allow_on_all_virtual_keys=True,
        oauth_config={
            "authorize_url": f"{oauth_upstream.base}/authorize",
            "token_url": f"{oauth_upstream.base}/token",
            "client_id": client_id,
            "client_secret": "env.GH_APP_SECRET",
        },
    )
    registrations = oauth_upstream.stats().get("registrations", 0)
    _, value = virtual_key_create(name="noah-key")
    oauth_upstream.login("noah-at-upstream")
    link = link_in(call(Client(), "ghapp_whoami", x_bf_vk=value))
    browser = Client()
    start = browser.get(path_of(link))
    assert f"client_id={client_id}" in start["Location"]
    assert browser.get(upstream_approves(start["Location"])).status_code == 200
    assert text_of(call(Client(), "ghapp_whoami", x_bf_vk=value)) == "noah-at-upstream"
    assert oauth_upstream.stats().get("registrations", 0) == registrations
    assert not McpOAuthRegistration.objects.filter(mcp_client=client).exists()

    # A wrong secret: the token endpoint refuses (invalid_client), nothing is stored.
    McpUserToken.objects.all().delete()
    monkeypatch.setenv("GH_APP_SECRET", "wrong")
    link = link_in(call(Client(), "ghapp_whoami", x_bf_vk=value))
    browser = Client()
    refused = browser.get(upstream_approves(browser.get(path_of(link))["Location"]))
    assert refused.status_code == 400 and "invalid_client" in refused.json()["error"]["message"]
    assert McpUserToken.objects.count() == 0


# --- revocation -------------------------------------------------------------------------------------


def _connect_vk(gh: McpClient, value: str) -> None:
    link = link_in(call(Client(), "gh_whoami", x_bf_vk=value))
    browser = Client()
    assert browser.get(upstream_approves(browser.get(path_of(link))["Location"])).status_code == 200


def test_the_admin_lists_tokens_without_values_and_revokes_them(gh, oauth_upstream, alice):
    vk, value = virtual_key_create(name="olivia-key")
    _connect_vk(gh, value)
    row = McpUserToken.objects.get()
    admin = Client()
    admin.force_login(alice)
    listing = admin.get(reverse("admin:governance_mcpusertoken_changelist"))
    page = listing.content.decode()
    assert listing.status_code == 200 and "olivia-key" in page and "gh" in page
    assert row.access_token not in page and row.refresh_token not in page
    detail = admin.get(reverse("admin:governance_mcpusertoken_change", args=[row.pk])).content.decode()
    assert row.access_token not in detail and row.access_token_encrypted not in detail
    answer = admin.post(
        reverse("admin:governance_mcpusertoken_changelist"),
        {"action": "revoke", "_selected_action": [row.pk]},
    )
    assert answer.status_code == 302 and McpUserToken.objects.count() == 0
    assert call(Client(), "gh_whoami", x_bf_vk=value)["isError"] is True


def test_deleting_the_key_deletes_its_tokens(gh, oauth_upstream):
    vk, value = virtual_key_create(name="paul-key")
    _connect_vk(gh, value)
    assert McpUserToken.objects.filter(virtual_key=vk).count() == 1
    virtual_key_delete(vk=vk)
    assert McpUserToken.objects.count() == 0


def test_revoking_a_user_id_session_deletes_that_users_tokens_not_a_keys(gh, oauth_upstream, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False
    quinn, quinn_session = session_token(user_id="quinn")
    browser = Client()
    link = link_in(call(Client(), "gh_whoami", authorization=f"Bearer {quinn}"))
    browser.get(upstream_approves(browser.get(path_of(link))["Location"]))
    vk, value = virtual_key_create(name="rose-key")
    _connect_vk(gh, value)
    _, rose_session = session_token(vk=vk)
    assert McpUserToken.objects.count() == 2

    consent_sessions_revoke(session_ids=[quinn_session.pk, rose_session.pk])
    assert list(McpUserToken.objects.values_list("virtual_key", flat=True)) == [vk.pk]


# --- secrets ------------------------------------------------------------------------------------------


def _database_text() -> str:
    tables = [
        McpUserToken._meta.db_table,
        McpOAuthRegistration._meta.db_table,
        McpUpstreamOAuthFlow._meta.db_table,
        McpConnectLinkUse._meta.db_table,
        McpClient._meta.db_table,
    ]
    rows: list[str] = []
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            rows += [repr(row) for row in cursor.fetchall()]
    return "\n".join(rows)


def test_tokens_verifiers_and_client_secrets_never_appear_in_clear(gh, oauth_upstream, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    original_get, original_post = Client.get, Client.post

    def recording_get(self, *args, **kwargs):
        answer = original_get(self, *args, **kwargs)
        seen.append(answer.content.decode(errors="replace") + repr(dict(answer.items())))
        return answer

    def recording_post(self, *args, **kwargs):
        answer = original_post(self, *args, **kwargs)
        seen.append(answer.content.decode(errors="replace") + repr(dict(answer.items())))
        return answer

    monkeypatch.setattr(Client, "get", recording_get)
    monkeypatch.setattr(Client, "post", recording_post)
    _, value = virtual_key_create(name="sam-key")
    oauth_upstream.login("sam-at-upstream")
    link = link_in(call(Client(), "gh_whoami", x_bf_vk=value))
    browser = Client()
    start = browser.get(path_of(link))
    flow = McpUpstreamOAuthFlow.objects.get()
    verifier = flow.code_verifier
    back = upstream_approves(start["Location"])
    state = parse_qs(urlsplit(back).query)["state"][0]
    browser.get(back)
    assert text_of(call(Client(), "gh_whoami", x_bf_vk=value)) == "sam-at-upstream"
    row = McpUserToken.objects.get()
    registration = McpOAuthRegistration.objects.get(mcp_client=gh)
    secrets = {
        "access token": row.access_token,
        "refresh token": row.refresh_token,
        "verifier": verifier,
        "client secret": registration.client_secret,
        "state": state,
    }
    assert all(len(s) >= 20 for s in secrets.values())
    database = _database_text()
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    responses = "\n".join(seen)
    for name, secret in secrets.items():
        assert secret not in database, f"the {name} is in the database in clear"
        if name != "state":  # the state travels in URLs by design (and this test's browser logs them)
            assert secret not in logs, f"the {name} is in the logs"
            assert secret not in responses, f"the {name} is in a response"
    assert crypto.decrypt(row.access_token_encrypted) == row.access_token
    assert flow.state_digest == digest(state)
