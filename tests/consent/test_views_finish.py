"""The MCPs page, Finish Setup (submit) and the token exchange, up to the whole flow end to end."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from consent.models import AuthorizationCode, ConsentFlow, ConsentSession, FlowStatus, Identity
from consent.selectors import consent_session_for_access_token
from governance.keys import digest
from governance.services import virtual_key_set_active
from tests.consent.conftest import REDIRECT_URI, browser, csrf_token, start_flow

pytestmark = pytest.mark.django_db

VK_PATH = "/api/oauth/per-user/consent/vk"
SUBMIT_PATH = "/api/oauth/per-user/consent/submit"
TOKEN_PATH = "/api/oauth/per-user/token"


def code_from(location: str) -> dict[str, str]:
    query = parse_qs(urlsplit(location).query)
    return {key: values[0] for key, values in query.items()}


def exchange(client_id: str, code: str, verifier: str, redirect_uri: str = REDIRECT_URI, **extra: str):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        **extra,
    }
    return Client(enforce_csrf_checks=True).post(TOKEN_PATH, {k: v for k, v in data.items() if v is not None})


# --- the MCPs page -----------------------------------------------------------------------------


def test_mcps_page_lists_open_and_granted_per_user_clients_only(flow, vk):
    flow.post(VK_PATH, vk=vk.value)
    page = flow.browser.get("/oauth/consent/mcps", {"flow_id": flow.flow_id})
    html = page.content.decode()
    assert page.status_code == 200
    assert '<h1 id="page-title">Connect Your Apps</h1>' in html
    assert '<span class="app-name">docs-search</span>' in html
    assert '<span class="app-name">github</span>' in html
    assert "Tools: create_issue, search" in html
    assert "shared-server" not in html  # not a per-user OAuth client
    assert "jira" not in html  # per-user, but neither open nor granted to this key
    assert f"Virtual Key alice-key ({vk.masked_value})" in html
    assert vk.value not in html
    assert f'href="/oauth/consent?flow_id={flow.flow_id}" class="link">Change identity</a>' in html
    assert ">Finish Setup</button>" in html


def test_mcps_page_for_a_user_id_lists_only_open_clients(flow, mcp_clients):
    flow.post("/api/oauth/per-user/consent/user-id", user_id="bob")
    html = flow.browser.get("/oauth/consent/mcps", {"flow_id": flow.flow_id}).content.decode()
    assert "docs-search" in html
    assert "github" not in html
    assert "User ID bob" in html


def test_mcps_page_with_no_clients_says_so(flow):
    flow.post("/api/oauth/per-user/consent/user-id", user_id="bob")
    html = flow.browser.get("/oauth/consent/mcps", {"flow_id": flow.flow_id}).content.decode()
    assert "No MCP apps are available for this identity yet." in html


def test_mcps_page_before_choosing_an_identity_sends_the_user_back(flow):
    response = flow.browser.get("/oauth/consent/mcps", {"flow_id": flow.flow_id})
    assert response.status_code == 302
    assert response["Location"] == (
        f"/oauth/consent?flow_id={flow.flow_id}&error=Please+choose+how+to+identify+yourself+first."
    )


def test_mcps_page_in_another_browser_is_403(flow, vk):
    flow.post(VK_PATH, vk=vk.value)
    page = browser().get("/oauth/consent/mcps", {"flow_id": flow.flow_id})
    assert page.status_code == 403
    assert "alice-key" not in page.content.decode()


# --- submit ------------------------------------------------------------------------------------


def test_finish_setup_redirects_to_the_client_with_code_and_state(flow, vk):
    flow.post(VK_PATH, vk=vk.value)
    response = flow.post(SUBMIT_PATH)
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(REDIRECT_URI + "?code=")
    params = code_from(location)
    assert set(params) == {"code", "state"}
    assert params["state"] == "xyz-state"
    row = ConsentFlow.objects.get(flow_id=flow.flow_id)
    assert row.status == FlowStatus.SUBMITTED and row.submitted_at is not None
    session = ConsentSession.objects.get()
    assert (session.identity, session.virtual_key_id) == (Identity.VIRTUAL_KEY, vk.pk)
    assert sorted(session.mcp_clients.values_list("name", flat=True)) == ["docs-search", "github"]
    assert abs((session.expires_at - session.created_at).total_seconds() - 86400) < 5
    code = AuthorizationCode.objects.get()
    assert code.code_digest == digest(params["code"])  # stored as a digest only
    assert abs((code.expires_at - code.created_at).total_seconds() - 300) < 5


def test_finish_setup_to_a_private_use_scheme(oauth_client, pkce, vk):
    client = browser()
    flow_id = start_flow(client, oauth_client, pkce, redirect_uri="cursor://anysphere.cursor-mcp/oauth", state=None)
    token = csrf_token(client, flow_id)
    client.post(VK_PATH, {"flow_id": flow_id, "vk": vk.value, "csrfmiddlewaretoken": token})
    response = client.post(SUBMIT_PATH, {"flow_id": flow_id, "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert response["Location"].startswith("cursor://anysphere.cursor-mcp/oauth?code=")
    assert "state=" not in response["Location"]


def test_second_submit_is_409(flow, vk):
    flow.post(VK_PATH, vk=vk.value)
    assert flow.post(SUBMIT_PATH).status_code == 302
    again = flow.post(SUBMIT_PATH)
    assert again.status_code == 409
    assert again.json()["error"]["message"] == "Consent flow has already been submitted"
    assert AuthorizationCode.objects.count() == 1
    assert ConsentSession.objects.count() == 1


def test_identity_change_after_submit_is_409(flow, vk):
    flow.post(VK_PATH, vk=vk.value)
    flow.post(SUBMIT_PATH)
    response = flow.post("/api/oauth/per-user/consent/user-id", user_id="mallory")
    assert response.status_code == 409
    assert ConsentSession.objects.get().user_id == ""


def test_submit_after_expiry_is_410(flow, vk, clock):
    flow.post(VK_PATH, vk=vk.value)
    clock.advance(minutes=15, seconds=1)
    response = flow.post(SUBMIT_PATH)
    assert response.status_code == 410
    assert response.json()["error"]["message"] == "Consent flow has expired. Please start again from your app."
    assert not AuthorizationCode.objects.exists()


def test_submit_without_identity_goes_back_to_the_identity_page(flow):
    response = flow.post(SUBMIT_PATH)
    assert response["Location"] == (
        f"/oauth/consent?flow_id={flow.flow_id}&error=Please+choose+how+to+identify+yourself+first."
    )
    assert ConsentFlow.objects.get(flow_id=flow.flow_id).status == FlowStatus.PENDING


def test_submit_with_a_key_disabled_since_it_was_entered_goes_back_and_stays_pending(flow, vk):
    flow.post(VK_PATH, vk=vk.value)
    virtual_key_set_active(vk=vk, active=False)
    response = flow.post(SUBMIT_PATH)
    assert response["Location"] == (
        f"/oauth/consent?flow_id={flow.flow_id}&error=Virtual+Key+not+found+or+inactive.+Please+check+and+try+again."
    )
    assert ConsentFlow.objects.get(flow_id=flow.flow_id).status == FlowStatus.PENDING
    assert not ConsentSession.objects.exists()


def test_submit_from_another_browser_is_403(flow, vk, other_browser):
    flow.post(VK_PATH, vk=vk.value)
    response = other_browser.post(SUBMIT_PATH, flow_id=flow.flow_id)
    assert response.status_code == 403
    assert not AuthorizationCode.objects.exists()


def test_submit_without_csrf_is_refused(flow, vk):
    flow.post(VK_PATH, vk=vk.value)
    response = flow.browser.post(SUBMIT_PATH, {"flow_id": flow.flow_id})
    assert response.status_code == 403
    assert not AuthorizationCode.objects.exists()


def test_submit_without_flow_id_is_400(flow):
    response = flow.browser.post(SUBMIT_PATH, {"csrfmiddlewaretoken": flow.token})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "flow_id is required"


# --- token -------------------------------------------------------------------------------------


@pytest.fixture
def issued(flow, vk, oauth_client):
    """A submitted flow: ``(client_id, code)``."""
    flow.post(VK_PATH, vk=vk.value)
    return oauth_client.client_id, code_from(flow.post(SUBMIT_PATH)["Location"])["code"]


def test_token_exchange_with_the_right_verifier_returns_a_bearer_token(issued, pkce, vk):
    client_id, code = issued
    response = exchange(client_id, code, pkce.verifier)
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert 86390 <= body["expires_in"] <= 86400
    session = consent_session_for_access_token(body["access_token"])
    assert session is not None and session.virtual_key_id == vk.pk
    assert ConsentSession.objects.get().access_token_digest == digest(body["access_token"])


def test_reused_code_is_invalid_grant_and_revokes_the_token_it_issued(issued, pkce):
    client_id, code = issued
    token = exchange(client_id, code, pkce.verifier).json()["access_token"]
    again = exchange(client_id, code, pkce.verifier)
    assert again.status_code == 400
    assert again.json() == {"error": "invalid_grant", "error_description": "Authorization code has already been used"}
    assert consent_session_for_access_token(token) is None


def test_wrong_verifier_is_invalid_grant_and_burns_the_code(issued, pkce):
    client_id, code = issued
    wrong = exchange(client_id, code, "w" * 64)
    assert wrong.status_code == 400
    assert wrong.json() == {
        "error": "invalid_grant",
        "error_description": "PKCE verification failed: code_verifier does not match code_challenge",
    }
    assert exchange(client_id, code, pkce.verifier).json()["error"] == "invalid_grant"


def test_expired_code_is_invalid_grant(issued, pkce, clock):
    client_id, code = issued
    clock.advance(minutes=5, seconds=1)
    response = exchange(client_id, code, pkce.verifier)
    assert response.json() == {"error": "invalid_grant", "error_description": "Authorization code has expired"}


@pytest.mark.parametrize(
    ("change", "status", "error", "description"),
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type", "Only grant_type=authorization_code is supported"),
        ({"grant_type": None}, 400, "invalid_request", "grant_type is required"),
        ({"code": None}, 400, "invalid_request", "code is required"),
        ({"code_verifier": None}, 400, "invalid_request", "code_verifier is required"),
        ({"client_id": None}, 400, "invalid_request", "client_id is required"),
        ({"redirect_uri": None}, 400, "invalid_request", "redirect_uri is required"),
        ({"client_id": "bfc_nobody"}, 401, "invalid_client", "Unknown client_id"),
        ({"code": "forged"}, 400, "invalid_grant", "Authorization code is invalid"),
        (
            {"redirect_uri": "cursor://anysphere.cursor-mcp/oauth"},
            400,
            "invalid_grant",
            "redirect_uri does not match the authorization request",
        ),
    ],
)
def test_token_errors_follow_rfc_6749(issued, pkce, change, status, error, description):
    client_id, code = issued
    data = {"client_id": client_id, "code": code, "verifier": pkce.verifier, "redirect_uri": REDIRECT_URI}
    grant_type = change.pop("grant_type", "authorization_code")
    data.update({("verifier" if k == "code_verifier" else k): v for k, v in change.items()})
    response = exchange(data["client_id"], data["code"], data["verifier"], data["redirect_uri"], grant_type=grant_type)
    assert response.status_code == status
    assert response.json() == {"error": error, "error_description": description}
    assert ConsentSession.objects.get().access_token_digest is None


def test_code_issued_to_another_client_is_invalid_grant(issued, pkce):
    from consent.services import oauth_client_register

    _, code = issued
    other = oauth_client_register(redirect_uris=[REDIRECT_URI], client_name="Other")
    response = exchange(other.client_id, code, pkce.verifier)
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Authorization code was issued to another client",
    }


# --- the whole flow ----------------------------------------------------------------------------


def test_whole_flow_end_to_end_as_an_mcp_client_and_a_browser_see_it(vk, pkce):
    mcp_app = Client(enforce_csrf_checks=True)  # the MCP client's own HTTP calls
    metadata = mcp_app.get("/.well-known/oauth-authorization-server").json()
    registration = mcp_app.post(
        metadata["registration_endpoint"].removeprefix("http://testserver"),
        {"client_name": "Claude", "redirect_uris": [REDIRECT_URI]},
        content_type="application/json",
    ).json()
    client_id = registration["client_id"]

    user = browser()
    start = user.get(
        metadata["authorization_endpoint"].removeprefix("http://testserver"),
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT_URI,
            "code_challenge": pkce.challenge,
            "code_challenge_method": "S256",
            "state": "opaque-123",
        },
    )
    identity_url = start["Location"]
    page = user.get(identity_url)
    assert "Connect to Bifrost" in page.content.decode()
    flow_id = parse_qs(urlsplit(identity_url).query)["flow_id"][0]
    token = csrf_token(user, flow_id)

    wrong = user.post(VK_PATH, {"flow_id": flow_id, "vk": "sk-bf-nope", "csrfmiddlewaretoken": token})
    assert "Virtual Key not found or inactive." in user.get(wrong["Location"]).content.decode()

    right = user.post(VK_PATH, {"flow_id": flow_id, "vk": vk.value, "csrfmiddlewaretoken": token})
    assert "Connect Your Apps" in user.get(right["Location"]).content.decode()

    finish = user.post(SUBMIT_PATH, {"flow_id": flow_id, "csrfmiddlewaretoken": token})
    params = code_from(finish["Location"])
    assert params["state"] == "opaque-123"

    grant = mcp_app.post(
        metadata["token_endpoint"].removeprefix("http://testserver"),
        {
            "grant_type": "authorization_code",
            "code": params["code"],
            "code_verifier": pkce.verifier,
            "client_id": client_id,
            "redirect_uri": REDIRECT_URI,
        },
    )
    assert grant.status_code == 200
    session = consent_session_for_access_token(grant.json()["access_token"])
    assert session.client.client_name == "Claude"
    assert session.virtual_key_id == vk.pk
